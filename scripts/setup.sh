#!/usr/bin/env bash
# Install everything vlmagent needs; idempotent, and quick (a few seconds) once done.
#
#   bash scripts/setup.sh        (or: make setup)
#
# 1. apt:   Debian chromium, chromium-driver and fonts, only if missing (root or sudo); nodejs and
#           npm only if the `node` / `npm` commands are missing (a NodeSource node bundles npm).
# 2. venv:  one venv per dependency set, cached in $VLMAGENT_CACHE (default ~/.cache/vlmagent)
#           as venv-<hash12>; the hash covers requirements/*.txt, this script, the dependency
#           sections of setup.cfg and the interpreter. torch + torchvision are installed first,
#           every pip step uses requirements/constraints.txt. Built in a temporary folder and
#           renamed into place only when complete, so an interrupted build is never reused.
# 3. .venv: a small venv of this checkout's own (no copy of the packages): a .pth file adds the
#           cached venv's site-packages, this checkout is installed into it in editable mode, and
#           the cached venv's console scripts (accelerate, pytest, ruff, ...) are linked in with
#           their interpreter line pointing here. So `.venv/bin/vlmagent` always runs THIS
#           checkout's code, however many checkouts share the cached venv.
# 4. node:  the vite-react scaffold's pinned node_modules (`npm ci` of its package-lock.json),
#           installed once into $VLMAGENT_CACHE/node-vite-react-<hash12 of the lock>/ and made
#           read-only; every site build links to it (vlmagent/rewards/build.py), offline.
# 5. cdn:   the CDN mirror's pinned front-end libraries (vlmagent/web/cdn/package-lock.json), the
#           same way into $VLMAGENT_CACHE/cdn-<hash12 of the lock>/; source maps and non-latin
#           font subsets are dropped. The sandboxed browser answers CDN URLs from it
#           (vlmagent/web/cdn.py); nothing is fetched at scoring time.
#
# Environment: VLMAGENT_CACHE (cache folder), VLMAGENT_PYTHON (a Python 3.11 interpreter),
# VLMAGENT_SKIP_APT=1 (skip step 1), VLMAGENT_KEEP_VENVS (cached venvs kept, default 3),
# VLMAGENT_SKIP_NODE=1 (skip steps 4 and 5: no vite-react builds, and scoring then needs
# browser.cdn_mirror=false).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CACHE="${VLMAGENT_CACHE:-$HOME/.cache/vlmagent}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
DRIVING="$ROOT/requirements/driving.txt"
APT_PACKAGES=(chromium chromium-driver fonts-dejavu-core fonts-liberation)
NODE_APT_PACKAGES=(nodejs npm)  # checked by command, not by package: NodeSource's nodejs has npm
SCAFFOLD_NODE="$ROOT/vlmagent/scaffolds/vite-react"
CDN_NODE="$ROOT/vlmagent/web/cdn"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
EXTRAS=(test driving ray)
KEEP_VENVS="${VLMAGENT_KEEP_VENVS:-3}"

# ---------------------------------------------------------------- helpers
us() { echo "${EPOCHREALTIME/./}"; }  # microseconds since the epoch
report() {  # report STEP START_US MESSAGE: one line per step with the time it took
    local dt=$(( $(us) - $2 ))
    printf '[setup] %-8s %-62s %3d.%01ds\n' "$1" "$3" $((dt / 1000000)) $((dt / 100000 % 10))
}
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
show_log() {  # the end of a pip/apt log, without pip's noise about absent local index folders
    grep -v "^WARNING: Location '" "$1" | tail -n 40 >&2 || true
}

# ---------------------------------------------------------------- 1. apt
step_apt() {
    local t0 missing=() p sudo=() log
    t0=$(us)
    if [[ "${VLMAGENT_SKIP_APT:-0}" == 1 ]]; then
        report apt "$t0" "skipped (VLMAGENT_SKIP_APT=1)"; return
    fi
    if ! command -v dpkg-query >/dev/null; then
        command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
            || die "no dpkg here: install Chromium and the DejaVu/Liberation fonts yourself," \
                   "then rerun with VLMAGENT_SKIP_APT=1"
        report apt "$t0" "not Debian; using $(command -v chromium || command -v chromium-browser)"
        return
    fi
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
    done
    if [[ "${VLMAGENT_SKIP_NODE:-0}" != 1 ]] && ! { command -v node && command -v npm; } >/dev/null
    then
        missing+=("${NODE_APT_PACKAGES[@]}")
    fi
    if (( ${#missing[@]} == 0 )); then
        report apt "$t0" "ok: ${APT_PACKAGES[*]} node npm"; return
    fi
    if (( EUID != 0 )); then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    mkdir -p "$CACHE/logs"
    log="$CACHE/logs/apt.log"
    echo "[setup] apt      installing ${missing[*]} (log: $log)"
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update \
            && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; \
         } >"$log" 2>&1; then
        show_log "$log"; die "apt-get failed (full log: $log)"
    fi
    report apt "$t0" "installed ${missing[*]}"
}

# ---------------------------------------------------------------- 2. venv
pick_python() {
    local cand
    for cand in ${VLMAGENT_PYTHON:-} python3.11 python3; do
        if command -v "$cand" >/dev/null \
           && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            echo "$cand"; return
        fi
    done
    die "vlmagent needs Python 3.11 (set VLMAGENT_PYTHON to one)"
}

# Requirement names from setup.cfg: install_requires + the given extras, one per line.
# With --hash-input it also prints python_requires (what the venv hash covers of setup.cfg).
cfg_requirements() {
    "$PYTHON" - "$ROOT/setup.cfg" "$@" <<'PY'
import configparser
import sys

cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
args = sys.argv[2:]


def names(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]


if "--hash-input" in args:
    args.remove("--hash-input")
    print("python_requires", cfg["options"].get("python_requires", ""))
reqs = names(cfg["options"]["install_requires"])
for extra in args:
    reqs += names(cfg["options.extras_require"][extra])
print("\n".join(reqs))
PY
}

venv_hash() {  # what the cached venv's content depends on (not the rest of this script)
    {
        cat "$CONSTRAINTS" "$DRIVING"
        echo "${TORCH_PINS[*]} ${EXTRAS[*]}"
        declare -f build_venv
        cfg_requirements --hash-input "${EXTRAS[@]}"
        "$PYTHON" -c 'import os, platform, sys
print(os.path.realpath(sys.executable), platform.python_version(), platform.machine())'
    } | sha256sum | cut -c1-12
}

build_venv() {  # build_venv TMP: a complete venv in TMP, or exit
    local tmp=$1 t0 log="$CACHE/logs/venv-$HASH.log" pip
    : >"$log"
    echo "[setup] venv     building $VENV (a few minutes; log: $log)"
    pip=("$tmp/bin/python" -m pip install --disable-pip-version-check -c "$CONSTRAINTS")

    t0=$(us)
    "$PYTHON" -m venv --prompt vlmagent "$tmp" >>"$log" 2>&1 || { show_log "$log"; die "python -m venv failed"; }
    report venv "$t0" "created with $("$tmp/bin/python" -V 2>&1)"

    t0=$(us)
    "${pip[@]}" "${TORCH_PINS[@]}" >>"$log" 2>&1 \
        || { show_log "$log"; die "installing ${TORCH_PINS[*]} failed (log: $log)"; }
    report torch "$t0" "${TORCH_PINS[*]}"

    t0=$(us)
    local reqs
    mapfile -t reqs < <(cfg_requirements "${EXTRAS[@]}")
    "${pip[@]}" "${reqs[@]}" >>"$log" 2>&1 \
        || { show_log "$log"; die "installing the setup.cfg dependencies failed (log: $log)"; }
    report deps "$t0" "${#reqs[@]} requirements (setup.cfg + extras: ${EXTRAS[*]})"

    t0=$(us)
    "${pip[@]}" --no-deps -r "$DRIVING" >>"$log" 2>&1 \
        || { show_log "$log"; die "installing requirements/driving.txt failed (log: $log)"; }
    report driving "$t0" "nuscenes-devkit (--no-deps)"

    t0=$(us)
    "$tmp/bin/python" -c 'import torch, torchvision, transformers, accelerate, peft, playwright, cv2
import qwen_vl_utils, yaml, pytest, nuscenes, ray' >>"$log" 2>&1 \
        || { show_log "$log"; die "the new venv cannot import its packages (log: $log)"; }
    report check "$t0" "imports ok"
}

relocate_venv() {  # relocate_venv FROM TO: rename a finished venv, fixing paths in bin/
    local from=$1 to=$2
    { grep -rlIF --null "$from" "$from/bin" "$from/pyvenv.cfg" || true; } \
        | xargs -0 -r sed -i "s|$from|$to|g"
    mv -T "$from" "$to"
}

prune_venvs() {  # keep the KEEP_VENVS most recently used venvs; drop others unused for a day
    local d n=0
    while IFS= read -r d; do
        d=${d%/.vlmagent-complete}
        n=$((n + 1))
        (( n <= KEEP_VENVS )) && continue
        [[ "$d" == "$VENV" ]] && continue
        [[ -n $(find "$d/.vlmagent-complete" -mmin -1440 2>/dev/null) ]] && continue
        (
            flock -n 8 || exit 0
            rm -rf "$d" && rm -f "$d.lock" && echo "[setup] prune    removed unused $d"
        ) 8>"$d.lock"
    done < <(ls -1t "$CACHE"/venv-*/.vlmagent-complete 2>/dev/null)
}

step_venv() {
    local t0
    t0=$(us)
    if [[ -f "$VENV/.vlmagent-complete" && -x "$VENV/bin/python" ]]; then
        touch "$VENV/.vlmagent-complete"  # last use, for pruning
        report venv "$t0" "cached: $VENV"; return
    fi
    mkdir -p "$CACHE/logs"
    exec 9>"$VENV.lock"
    if ! flock -n 9; then
        echo "[setup] venv     another setup is building $VENV; waiting"
        flock 9
    fi
    if [[ -f "$VENV/.vlmagent-complete" && -x "$VENV/bin/python" ]]; then
        exec 9>&-
        report venv "$t0" "built by another setup: $VENV"; return
    fi
    # We hold the lock: anything else for this hash is left over from an interrupted build.
    rm -rf "$VENV" "$VENV".tmp.*
    BUILD_TMP="$VENV.tmp.$$"
    trap 'rm -rf "$BUILD_TMP"' EXIT
    trap 'exit 130' INT TERM
    build_venv "$BUILD_TMP"
    printf 'hash=%s\nbuilt=%s\npython=%s\nchecked_out_from=%s\n' \
        "$HASH" "$(date -u +%FT%TZ)" "$("$BUILD_TMP/bin/python" -V 2>&1)" "$ROOT" \
        >"$BUILD_TMP/.vlmagent-complete"
    relocate_venv "$BUILD_TMP" "$VENV"
    trap - EXIT INT TERM
    exec 9>&-
    report venv "$t0" "built: $VENV ($(du -sh "$VENV" | cut -f1))"
    prune_venvs
}

# ---------------------------------------------------------------- 3. this checkout's .venv
step_link() {
    local t0 local_venv="$ROOT/.venv" stamp want site log="$CACHE/logs/editable.log" f first
    t0=$(us)
    stamp="$local_venv/.vlmagent-overlay"
    want="$VENV $(sha256sum "$ROOT/setup.cfg" | cut -c1-16)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$local_venv/bin/vlmagent" ]]; then
        report link "$t0" ".venv: this checkout over $VENV"; return
    fi
    if [[ -L "$local_venv" ]]; then
        rm "$local_venv"  # the old layout: a link to the shared venv
    elif [[ -e "$local_venv" && ! -f "$stamp" ]]; then
        die "$local_venv is a folder that setup did not make; move it away and rerun"
    fi
    rm -rf "$local_venv"
    mkdir -p "$(dirname "$log")"
    "$PYTHON" -m venv --without-pip --prompt vlmagent "$local_venv" >"$log" 2>&1 \
        || { show_log "$log"; die "python -m venv $local_venv failed"; }
    site=$("$local_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    # addsitedir (not a plain path line) so the cached venv's own .pth files are processed too
    echo "import site; site.addsitedir('$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')')" \
        >"$site/_vlmagent_cached_venv.pth"
    # console scripts of the cached venv, run by this interpreter; binaries (ruff) are linked
    for f in "$VENV"/bin/*; do
        [[ -e "$local_venv/bin/$(basename "$f")" || ! -f "$f" ]] && continue
        first=$(head -c 200 "$f" | head -n 1 | tr -d '\0')
        if [[ "$first" == "#!$VENV/bin/python"* ]]; then
            { echo "#!$local_venv/bin/python"; tail -n +2 "$f"; } >"$local_venv/bin/$(basename "$f")"
            chmod +x "$local_venv/bin/$(basename "$f")"
        elif [[ "$first" != "#!"* ]]; then
            ln -s "$f" "$local_venv/bin/$(basename "$f")"
        fi
    done
    "$local_venv/bin/python" -m pip install --disable-pip-version-check --no-deps \
        --no-build-isolation -c "$CONSTRAINTS" -e "$ROOT" >>"$log" 2>&1 \
        || { show_log "$log"; die "pip install -e $ROOT failed (log: $log)"; }
    "$local_venv/bin/python" -c 'import sys, vlmagent, torch, playwright
assert vlmagent.__file__.startswith(sys.argv[1]), vlmagent.__file__' "$ROOT/" >>"$log" 2>&1 \
        || { show_log "$log"; die "$local_venv does not import this checkout (log: $log)"; }
    echo "$want" >"$stamp"
    report link "$t0" ".venv: this checkout over $VENV (editable)"
}

# ---------------------------------------------------------------- 4 and 5. npm installs
# npm_install STEP SRC PREFIX WHAT SKIPPED CHECK [NPM_ARGS...]: `npm ci` of SRC's package-lock.json
# once into $CACHE/PREFIX-<hash12 of the lock>/, built in a temporary folder, checked with the
# function CHECK (given that folder), made read-only and renamed into place.
npm_install() {
    local step=$1 src=$2 prefix=$3 what=$4 skipped=$5 check=$6; shift 6
    local t0 lock="$src/package-lock.json" dir tmp log
    t0=$(us)
    if [[ "${VLMAGENT_SKIP_NODE:-0}" == 1 ]]; then
        report "$step" "$t0" "skipped (VLMAGENT_SKIP_NODE=1): $skipped"; return
    fi
    command -v node >/dev/null && command -v npm >/dev/null \
        || die "node and npm are needed for $what (or set VLMAGENT_SKIP_NODE=1)"
    dir="$CACHE/$prefix-$(sha256sum "$lock" | cut -c1-12)"
    if [[ -f "$dir/.vlmagent-complete" && -d "$dir/node_modules" ]]; then
        report "$step" "$t0" "cached: $dir"; return
    fi
    mkdir -p "$CACHE/logs"
    log="$CACHE/logs/$(basename "$dir").log"
    (
        flock 7
        [[ -f "$dir/.vlmagent-complete" ]] && exit 0  # another setup finished it meanwhile
        # A read-only tree from an interrupted run cannot be deleted until made writable again.
        chmod -R u+w "$dir" "$dir".tmp.* 2>/dev/null || true
        rm -rf "$dir" "$dir".tmp.*
        tmp="$dir.tmp.$$"
        mkdir -p "$tmp"
        cp "$src/package.json" "$lock" "$tmp/"
        printf '[setup] %-8s npm ci for %s (log: %s)\n' "$step" "$what" "$log"
        # --ignore-scripts: no package runs code at install.
        ( cd "$tmp" && npm ci --no-audit --no-fund --ignore-scripts "$@" --cache "$tmp/.npm" ) \
            >"$log" 2>&1 || { show_log "$log"; rm -rf "$tmp"; die "npm ci failed (log: $log)"; }
        rm -rf "$tmp/.npm"
        "$check" "$tmp" >>"$log" 2>&1 \
            || { show_log "$log"; rm -rf "$tmp"; die "$what: the install is unusable (log: $log)"; }
        printf 'lock=%s\nbuilt=%s\nnode=%s\n' "$lock" "$(date -u +%FT%TZ)" "$(node --version)" \
            >"$tmp/.vlmagent-complete"
        chmod -R a-w "$tmp/node_modules"  # shared by every user: none may change it
        mv -T "$tmp" "$dir"
    ) 7>"$dir.lock"
    report "$step" "$t0" "installed: $dir ($(du -sh "$dir" | cut -f1))"
}

check_vite() { node "$1/node_modules/vite/bin/vite.js" --version; }

check_cdn() {
    # Never requested by a page: source maps (read by DevTools only) and the non-latin or woff
    # fontsource files (the generated Google Fonts CSS names latin woff2 only). About 80 MB.
    find "$1/node_modules" -type f -name '*.map' -delete
    find "$1/node_modules/@fontsource" -path '*/files/*' -type f ! -name '*-latin-*.woff2' -delete
    # Every listed package is there at its pinned version (aliases included).
    ( cd "$1" && node -e '
const deps = require("./package.json").dependencies;
for (const [name, spec] of Object.entries(deps)) {
  const want = spec.replace(/^npm:.*@/, "");
  const got = require(`./node_modules/${name}/package.json`).version;
  if (got !== want) throw new Error(`${name}: installed ${got}, pinned ${want}`);
}' )
}

# esbuild and rollup ship their platform binaries as optional packages, which need no scripts.
step_node() {
    npm_install node "$SCAFFOLD_NODE" node-vite-react "the vite-react scaffold" \
        "no vite-react builds" check_vite
}

# --omit=optional: only the listed packages' own files are ever served.
step_cdn() {
    npm_install cdn "$CDN_NODE" cdn "the CDN mirror" \
        "score with browser.cdn_mirror=false" check_cdn --omit=optional
}

# ---------------------------------------------------------------- main
T_ALL=$(us)
step_apt
PYTHON=$(pick_python)
HASH=$(venv_hash)
VENV="$CACHE/venv-$HASH"
step_venv
step_link
step_node
step_cdn
report done "$T_ALL" "use .venv/bin/python (make test, make demo)"
