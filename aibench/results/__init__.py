"""Result records, their statistics and their on-disk store. Never imports torch."""

from aibench.results.files import iter_result_files
from aibench.results.schema import SCHEMA_NAME, SCHEMA_VERSION, Result, metric
from aibench.results.store import check_outputs, load_result, load_results, write_result

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "Result",
    "check_outputs",
    "iter_result_files",
    "load_result",
    "load_results",
    "metric",
    "write_result",
]
