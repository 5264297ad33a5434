"""The testinfra backend's plumbing: commands reach `run`, arguments are quoted,
results come back as testinfra's CommandResult. `Recorder` stands in for the
Machine only to test this adapter plumbing; suites use it on a booted machine."""

from harness.plugin.testinfra import host_for
from harness.vm import ssh


class Recorder:
    name = "stand-in"

    def __init__(self, result: ssh.Result):
        self.result, self.commands = result, []

    def run(self, cmd: str) -> ssh.Result:
        self.commands.append(cmd)
        return self.result


def test_host_run_goes_through_machine_run_with_quoted_arguments():
    m = Recorder(ssh.Result(0, "hello\n", ""))
    out = host_for(m).run("echo %s", "a b;c")
    assert m.commands == ["echo 'a b;c'"]
    assert (out.rc, out.stdout, out.succeeded) == (0, "hello\n", True)


def test_failure_keeps_status_and_stderr():
    m = Recorder(ssh.Result(3, "", "nope\n"))
    out = host_for(m).run("false")
    assert (out.rc, out.stderr, out.failed) == (3, "nope\n", True)


def test_check_output_strips_like_testinfra_does():
    assert host_for(Recorder(ssh.Result(0, "ro,relatime\n", ""))).check_output("x") == \
        "ro,relatime"
