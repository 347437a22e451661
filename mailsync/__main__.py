"""`python -m mailsync` and the `mailsync` console script. Kept this small on purpose: a parse worker is
a spawned process, and spawning imports the parent's main script again in each worker; the command
line (typer, rich, the settings) loads in run(), in the parent only."""


def run() -> None:
    """Console-script entry point: the command line of mailsync.cli."""
    from mailsync.cli import run as run_cli  # noqa: PLC0415 - see the module doc

    run_cli()


if __name__ == "__main__":
    run()  # it exits with the command's status
