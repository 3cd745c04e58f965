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
FAKE_SSH_HOST="$host" exec sh -c "$*"
