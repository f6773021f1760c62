# Shared by scripts/test, scripts/demo and scripts/bench: find Pythons, make venvs.
# shellcheck shell=bash

# Prints the path of a working interpreter for version $1 (e.g. 3.12), or nothing.
find_python() {
    local version=$1 candidate
    for candidate in "python$version" "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/$version"*/bin/"python$version"; do
        [ -n "$candidate" ] || continue
        if "$candidate" -c 'import sys, venv' >/dev/null 2>&1; then
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

# The default interpreter: $PYTHON, else python3; it must be 3.10 or newer.
default_python() {
    local py=${PYTHON:-python3}
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "slowwatch needs Python 3.10 or newer; set PYTHON=/path/to/python3.x" >&2
        return 1
    fi
    "$py" -c 'import sys; print(sys.executable)'
}

# make_venv DIR PYTHON: a fresh virtualenv with an up-to-date pip.
make_venv() {
    local dir=$1 py=$2
    if [ ! -x "$dir/bin/python" ]; then
        "$py" -m venv "$dir"
    fi
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
}
