"""Contracts every stage shares and none owns: tensor specs, preprocessing, manifest and sidecar schemas,
trtexec flags and device facts. Imports nothing of the stages (tests/test_layering.py holds it to that)."""
