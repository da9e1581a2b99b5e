"""`python -m agentkit.cli`: the `agentkit` command without its installed script."""

from agentkit.cli import main

main()
