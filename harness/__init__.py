"""Boot container operating systems in libvirt VMs and check what they promise.

PYTEST_DONT_REWRITE: the command line imports the package before it starts pytest
(`harness run`, `harness repro`), too late for pytest to rewrite its asserts, which
it would otherwise warn about at the end of every run."""

__version__ = "0.1.0"
