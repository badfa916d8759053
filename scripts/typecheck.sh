#!/usr/bin/env bash
# mypy --strict over the package as Python imports it.  The client's layout maps
# core/ -> uringstack and plugins/ -> uringstack.plugins (setuptools package-dir),
# which mypy cannot follow, so a tree of symlinks with the import layout is
# built in .typecheck/ and checked instead; messages name the .typecheck paths,
# which are the same files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .typecheck
mkdir -p .typecheck/uringstack
for f in core/*; do
  case $f in *.so|*/__pycache__) continue ;; esac
  ln -s "$PWD/$f" ".typecheck/uringstack/$(basename "$f")"
done
ln -s "$PWD/plugins" .typecheck/uringstack/plugins
cd .typecheck
exec ../.venv/bin/mypy --config-file ../pyproject.toml -p uringstack "$@"
