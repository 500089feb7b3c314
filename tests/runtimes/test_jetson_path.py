"""The Jetson path (TensorRT build and run, doctor, host grouping) works without torch or onnxruntime:
JetPack has neither as a pip package (research/deploy-stack.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('torch', 'onnxruntime', 'onnxscript'):
                raise ImportError(f'{name} is blocked: not on the Jetson path')
    sys.meta_path.insert(0, Block())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_engine_modules_and_cli_import_without_torch_or_onnxruntime():
    result = _run("""
        import foundry_edge.cli, foundry_edge.data.preprocess
        import foundry_edge.runtimes.trt, foundry_edge.runtimes.build, foundry_edge.contracts.sidecar
        import foundry_edge.runtimes.trt_compat, foundry_edge.runtimes.cuda_host
        import foundry_edge.runtimes.compare, foundry_edge.assignment_health  # verify's health figures
        print('imported')
    """)
    assert result.returncode == 0, result.stderr
    assert "imported" in result.stdout


def test_doctor_runs_without_torch_or_onnxruntime_and_says_what_is_missing():
    result = _run("""
        from foundry_edge.cli import main
        raise SystemExit(main(['doctor']))
    """)
    assert result.returncode == 0, result.stderr
    out = result.stdout.lower()
    assert "torch" in out and "onnxruntime" in out
    assert "traceback" not in (result.stdout + result.stderr).lower()
