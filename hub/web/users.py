"""``shotline-hub users``: create, list and remove review-page accounts.

::

    shotline-hub users add NAME --role operator|viewer [--config hub.toml | --file users.json]
    shotline-hub users passwd NAME
    shotline-hub users list
    shotline-hub users remove NAME

The password is asked twice on the terminal, or read from the first line of
``--password-file`` (``-`` = standard input) for provisioning scripts; it is
never taken from the command line, where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from .auth import ROLES, AuthError, UserDB


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shotline-hub users", description="Manage review-page accounts.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="hub TOML config file (its [web] users_path)")
    src.add_argument("--file", help="users file (default: users.json)")
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True,
                     help="operator: reviews incidents; viewer: read-only")
    add.add_argument("--password-file", help="read the password from this file's first line ('-': stdin)")
    pw = sub.add_parser("passwd", help="set a new password (keeps the role unless --role)")
    pw.add_argument("name")
    pw.add_argument("--role", choices=ROLES)
    pw.add_argument("--password-file")
    sub.add_parser("list", help="list accounts and roles")
    rm = sub.add_parser("remove", help="delete an account")
    rm.add_argument("name")
    return p


def _users_path(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    if args.config:
        from shotline.core.config import load_config

        from ..config import HubConfig

        cfg = load_config(args.config, HubConfig)
        web = getattr(cfg, "web", None)
        users_path = web.users_path if web is not None else "users.json"
        p = Path(users_path)
        return p if p.is_absolute() else Path(args.config).parent / p
    return Path("users.json")


def _password(path: str | None) -> str:
    if path:
        text = sys.stdin.readline() if path == "-" else Path(path).read_text(encoding="utf-8")
        return text.splitlines()[0] if text.splitlines() else ""
    a = getpass.getpass("password: ")
    b = getpass.getpass("again: ")
    if a != b:
        raise AuthError("the two passwords differ")
    return a


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 1 on a refused request, 2 on bad configuration."""
    args = _parser().parse_args(argv)
    try:
        path = _users_path(args)
    except Exception as exc:  # a config error names its key
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        db = UserDB(path)
        if args.action == "list":
            for name, rec in sorted(db.users().items()):
                flag = "\tdisabled" if rec.disabled else ""
                print(f"{name}\t{rec.role}{flag}")
            return 0
        if args.action == "remove":
            if not db.remove(args.name):
                print(f"no user {args.name!r} in {path}", file=sys.stderr)
                return 1
            print(f"removed {args.name} from {path}")
            return 0
        if args.action == "add":
            if args.name in db.users():
                raise AuthError(f"user {args.name!r} exists (use 'passwd' to change the password)")
            db.add(args.name, _password(args.password_file), args.role)
            print(f"added {args.name} ({args.role}) to {path}")
            return 0
        # passwd
        rec = db.users().get(args.name)
        if rec is None:
            raise AuthError(f"no user {args.name!r} in {path}")
        db.add(args.name, _password(args.password_file), args.role or rec.role, replace=True)
        print(f"password of {args.name} changed in {path} (existing sessions end at the hub's next restart)")
        return 0
    except (AuthError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
