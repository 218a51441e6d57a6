#!/usr/bin/env python3
"""Finds Flowork secrets and private keys in a git repository: the files of its work tree and every commit of its
history (all refs). Exits 1 and names where each finding is (never the secret itself), 0 when clean.

Flowork tokens are recognised by prefix *and* checksum (see common/src/secret.rs), so a string that only looks like
one is not reported: `fwe_`/`fwr_`/`fwk_` + 43 URL-safe characters + 8 hex digits of the CRC-32 of what precedes them,
and `fwa_` + a JWT + `.` + that checksum. Private keys: PEM `-----BEGIN ... PRIVATE KEY-----` blocks.

Usage: secret-scan.py [REPO]   (default: the current directory)
"""

import re
import subprocess
import sys
import zlib

RANDOM_TOKEN = re.compile(r"fw[erk]_[A-Za-z0-9_-]{43}[0-9a-f]{8}")
RANDOM_KINDS = {"fwe_": "engine token", "fwr_": "refresh token", "fwk_": "API key"}
WRAPPED_TOKEN = re.compile(r"fwa_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[0-9a-f]{8}")
COMMIT = re.compile(r"commit [0-9a-f]{40,64}")
PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")


def checksum(text: str) -> str:
    return format(zlib.crc32(text.encode()) & 0xFFFFFFFF, "08x")


def findings(text: str):
    """(kind, masked) for every secret in text."""
    for match in RANDOM_TOKEN.finditer(text):
        token = match.group(0)
        if checksum(token[:-8]) == token[-8:]:
            yield (RANDOM_KINDS[token[:4]], token[:8] + "…")
    for match in WRAPPED_TOKEN.finditer(text):
        unchecked, _, sum_ = match.group(0).rpartition(".")
        if checksum(unchecked) == sum_:
            yield ("admin token", unchecked[:8] + "…")
    for match in PRIVATE_KEY.finditer(text):
        yield ("private key", match.group(0))


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True).stdout.decode("utf-8", "replace")


def scan(repo: str):
    found = []
    for path in git(repo, "ls-files", "-z").split("\0"):
        if not path:
            continue
        try:
            with open(f"{repo}/{path}", "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
        except (FileNotFoundError, IsADirectoryError):
            continue
        found += [(f"work tree: {path}", kind, masked) for kind, masked in findings(text)]
    # Every commit's patch, on every ref: a secret deleted later is still in the history.
    log = git(repo, "log", "--all", "-p", "--no-color", "--format=commit %H")
    commit = None
    for line in log.splitlines():
        if COMMIT.fullmatch(line):
            commit = line[7:]
            continue
        if line.startswith("+") and not line.startswith("+++"):
            found += [(f"history: commit {commit}", kind, masked) for kind, masked in findings(line)]
    return found


def main() -> int:
    repo = sys.argv[1] if len(sys.argv) > 1 else "."
    found = scan(repo)
    for where, kind, masked in found:
        print(f"{where}: {kind} {masked}")
    if found:
        print(f"{len(found)} secret(s) found; revoke them (engine rotate-token, logout, DELETE /auth/keys/ID, keys rotate) and rewrite the history", file=sys.stderr)
        return 1
    print("no secrets found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
