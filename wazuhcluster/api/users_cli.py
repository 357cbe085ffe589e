"""
The C{cluster_api_users} command: add, remove and list the users of the
REST API, and change their passwords.

    cluster_api_users --home /var/ossec add alice
    echo 'a long password' | cluster_api_users passwd alice
    cluster_api_users remove alice
    cluster_api_users list

Passwords are never arguments (they would show in the process list and the
shell's history): they are asked twice on a terminal, or read as one line
from standard input when it is not one, for scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
from getpass import getpass
from typing import IO, Sequence

from ..home import WazuhHome, addHomeArgument
from .users import ApiUsers, ApiUsersError, passwordProblem


def parser() -> argparse.ArgumentParser:
    """The command line of C{cluster_api_users}."""
    p = argparse.ArgumentParser(
        prog="cluster_api_users", description="Manage the users of the Wazuh cluster's REST API."
    )
    addHomeArgument(p)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help in (
        ("add", "add a user, asking for its password"),
        ("passwd", "change a user's password"),
        ("remove", "remove a user"),
    ):
        actions.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".").add_argument("user")
    actions.add_parser("list", help="list the users", description="List the users, one a line.")
    return p


def readPassword(name: str, stdin: IO[str]) -> str:
    """
    The new password of C{name}: one line of C{stdin} when it is not a
    terminal, else asked twice on the terminal.  L{ApiUsersError} when
    there is none, when the two differ or when it is too short or long.
    """
    if stdin.isatty():
        try:
            password = getpass(f"New password of {name}: ")
            again = getpass(f"The new password of {name} again: ")
        except (EOFError, KeyboardInterrupt):
            raise ApiUsersError("No password was given; nothing changed.") from None
        if password != again:
            raise ApiUsersError("The two passwords differ; nothing changed.")
    else:
        line = stdin.readline()
        if not line:
            raise ApiUsersError(
                "Standard input is empty: give the password as one line, or run the command in a terminal."
            )
        password = line[:-1] if line.endswith("\n") else line
        if password.endswith("\r"):
            password = password[:-1]
    problem = passwordProblem(password)
    if problem is not None:
        raise ApiUsersError(f"The password of {name} was refused: {problem}; nothing changed.")
    return password


def run(argv: Sequence[str] | None, out: IO[str], err: IO[str], stdin: IO[str]) -> int:
    """Run C{cluster_api_users} with C{argv}; the exit status (0 done, 1 refused)."""
    arguments = parser().parse_args(argv)
    users = ApiUsers.forHome(WazuhHome(os.path.abspath(arguments.home)))
    try:
        if arguments.action == "list":
            for name in users.names():
                out.write(f"{name}\n")
            return 0
        name = arguments.user
        if arguments.action == "add":
            users.checkNew(name)  # before asking for a password
            users.add(name, readPassword(name, stdin))
            out.write(f"User {name} added.\n")
        elif arguments.action == "passwd":
            users.checkExisting(name)
            users.setPassword(name, readPassword(name, stdin))
            out.write(f"Password of {name} changed.\n")
        else:
            users.remove(name)
            out.write(f"User {name} removed.\n")
    except ApiUsersError as e:
        err.write(f"Error: {e}\n")
        return 1
    except OSError as e:
        err.write(
            f"Error: cannot change the API users file {users.path}: {e.strerror or e}; "
            f"check the folder's permissions and free space.\n"
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: exits with L{run}'s status."""
    raise SystemExit(run(argv, sys.stdout, sys.stderr, sys.stdin))
