"""`python -m harness` (and the `harness` command): Ctrl-C is honoured from the first instant.

The SIGINT handler goes in before the CLI's imports, which take seconds on a busy machine: a Ctrl-C
while they run is counted and ends the command cleanly once they are done (exit 130, no traceback).
"""


def main() -> None:
    from harness import interrupts

    interrupts.install(starting=True)
    try:
        from harness.cli import main as cli_main

        cli_main()
    finally:
        interrupts.forget_handled_in_string_code()


if __name__ == "__main__":
    main()
