from foundry_edge.cli import entry

entry()
