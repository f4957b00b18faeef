#!/bin/sh
# Makes the token files that deploy/compose.yaml mounts as secrets, if they are not there yet:
#   deploy/secrets/robot_tokens     one robot bearer token per line (robots use the first line)
#   deploy/secrets/operator_tokens  `name token` per line, for the dashboard
# The directory is 0700 (only you on this host); the files are 0644 because Compose bind-mounts
# file secrets as they are and the containers run as uid 10001, which must be able to read them.
set -eu
dir=$(dirname "$0")/secrets
mkdir -p "$dir"
chmod 700 "$dir"
token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
if [ ! -s "$dir/robot_tokens" ]; then
    { token; token; token; token; } > "$dir/robot_tokens"
    echo "wrote $dir/robot_tokens"
fi
if [ ! -s "$dir/operator_tokens" ]; then
    { echo "alice $(token)"; echo "bob $(token)"; } > "$dir/operator_tokens"
    echo "wrote $dir/operator_tokens"
fi
chmod 644 "$dir/robot_tokens" "$dir/operator_tokens"
