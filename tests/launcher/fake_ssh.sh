#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# fake_ssh.sh: stands in for ssh in the launcher tests; runs the remote command with a local sh.
# Accepts "-o OPTION" pairs, then HOST and the one remote command string, as ringlet-run passes.
while [ $# -gt 0 ]; do
  case "$1" in
    -o) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
host="$1"
shift
# The command line ssh got, for tests that check what it shows in ps.
if [ -n "${FAKE_SSH_LOG:-}" ]; then printf '%s %s\n' "$host" "$*" >> "$FAKE_SSH_LOG"; fi
FAKE_SSH_HOST="$host" exec sh -c "$*"
