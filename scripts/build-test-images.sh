#!/usr/bin/env bash
# Build the images the Docker tests use, from this machine's own files (no registry needed).
set -euo pipefail
echo "(no test images yet)"
