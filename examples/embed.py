"""Embedding agentkit in an application: an in-memory source, the bundled model, a cited answer."""

from agentkit import Agent, MemorySource, Passage
from agentkit.llm.llama_cpp import LlamaCppLLM

notes = MemorySource("notes", "Our team's notes about the release process")
notes.add([
    Passage("release#0", "Releases are cut every second Tuesday from the main branch.", "Release cadence"),
    Passage("hotfix#0", "Hotfixes go to a release branch and are merged back into main.", "Hotfixes"),
])

agent = Agent(LlamaCppLLM(), [notes])  # LlamaCppLLM() = the bundled SmolLM2; pass a path for yours
answer = agent.ask("How often are releases cut?")

print(answer.text)
for c in answer.citations:
    print(f"[{c.marker}] {c.passage.title} ({c.passage.id})")
print("route:", answer.route.targets, "| warnings:", answer.warnings)
