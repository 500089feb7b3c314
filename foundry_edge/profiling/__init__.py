"""The profiling harness: student against teacher, latency and memory, reports people read.

    report = run_profile(ProfileConfig(students=[Subject("foundry-s16", "student")],
                                       teacher=Subject("pointjepa-vits", "teacher"), runtimes=["ort-cpu"]))
    write_reports(report, "profile/")   # report.json, report.md, report.html
"""

from foundry_edge.profiling.report import SCHEMA, SCHEMA_VERSION, to_markdown, write_reports
from foundry_edge.profiling.runner import ProfileConfig, run_profile, total_steps
from foundry_edge.profiling.subjects import Subject

__all__ = ["ProfileConfig", "SCHEMA", "SCHEMA_VERSION", "Subject", "run_profile", "to_markdown", "total_steps",
           "write_reports"]
