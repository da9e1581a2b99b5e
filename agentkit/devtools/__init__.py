"""Tools for working on agentkit itself (not used at run time): `python -m agentkit.devtools.layers`."""
