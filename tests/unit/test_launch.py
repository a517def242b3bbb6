"""The `aoai-simulator` command line: what goes to mitmdump, and what to the workers' HAProxy."""

import pytest

from aoai.launch.cli import Launch, UsageError, parse


def test_without_workers_every_argument_goes_to_mitmdump():
    args = ["--set", "listen_port=9000", "-p", "9001", "--listen-host", "127.0.0.1"]
    assert parse(args) == Launch(workers=1, mitmdump_args=args)


def test_workers_come_from_the_flag_else_the_environment():
    assert parse(["--workers", "3", "--set", "a=b"]).workers == 3
    assert parse(["--workers=2"], default_workers="5").workers == 2
    assert parse([], default_workers="4").workers == 4
    assert parse([], default_workers="").workers == 1


@pytest.mark.parametrize(
    "address",
    [
        ["-p", "9000", "--listen-host", "127.0.0.1"],
        ["--listen-port=9000", "--listen-host=127.0.0.1"],
        ["--set", "listen_port=9000", "--set", "listen_host=127.0.0.1"],
    ],
)
def test_with_workers_the_listen_address_is_haproxys(address):
    launch = parse(["--workers", "2", "--set", "confdir=/certs", *address, "-v"])
    assert (launch.workers, launch.listen_host, launch.port) == (2, "127.0.0.1", 9000)
    assert launch.mitmdump_args == ["--set", "confdir=/certs", "-v"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "two"], "--workers: expected a whole number, got 'two'"),
        (["--workers"], "--workers: expected a whole number, got ''"),
        (["--workers", "0"], "--workers: at least 1"),
        (["--workers", "2", "-p", "http"], "listen port: expected a number, got 'http'"),
    ],
)
def test_a_command_line_it_cannot_read_is_one_line(args, message):
    with pytest.raises(UsageError, match=f"^{message}$"):
        parse(args)
