"""The calculator keeps freed tensor memory in the process (glibc), so MD steps stop faulting pages in again."""

import subprocess
import sys

import pytest

RSS_AFTER_FREE = """
import sys, torch
from augkd.student.allocator import keep_freed_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # a second call finds it done
before = rss_mb()
block = torch.ones(50_000_000)  # 200 MB, every page touched
del block
print(rss_mb() - before)
"""


def rss_growth_after_free(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", RSS_AFTER_FREE, mode], capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_tensor_memory_stays_in_the_process_only_when_kept():
    assert rss_growth_after_free("default") < 50  # glibc unmapped the block when torch freed it
    assert rss_growth_after_free("keep") > 150  # kept in the heap for the next step to reuse
