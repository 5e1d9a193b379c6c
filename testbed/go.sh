# Sourced by the testbed's build scripts: make sure a Go toolchain new enough for the pinned modules is on
# PATH. A machine without one (or with an older one, e.g. Debian's golang-go) gets the official toolchain
# from the Go module proxy (the module golang.org/toolchain, which is what GOTOOLCHAIN downloads), cached
# under ~/.cache/slurm-k8s-bridge/go/<version>. Needs only curl or python3; no other download site.
# shellcheck shell=bash

ensure_go() {
  local want="${GO_VERSION:?GO_VERSION unset (testbed/versions.env)}" cache dir have proxy
  cache="${BRIDGE_CACHE:-$HOME/.cache/slurm-k8s-bridge}/go/$want"
  if [[ -x "$cache/bin/go" ]]; then export PATH="$cache/bin:$PATH"; fi
  if command -v go >/dev/null; then
    have="$(go env GOVERSION 2>/dev/null || true)"
    have="${have#go}"
    # new enough: the same minor release or later (the modules' go.mod ask for go 1.N.0)
    if [[ -n "$have" && "$(printf '%s\n%s\n' "${want%.*}" "$have" | sort -V | head -n1)" == "${want%.*}" ]]; then
      return 0
    fi
  fi
  proxy="${GOPROXY:-https://proxy.golang.org}"
  proxy="${proxy%%,*}"
  [[ "$proxy" != direct && "$proxy" != off ]] || proxy="https://proxy.golang.org"
  echo "[go] Go $want not found (have '${have:-none}'): fetching golang.org/toolchain from $proxy" >&2
  dir="$(mktemp -d)"
  local zip="$dir/go.zip" url="$proxy/golang.org/toolchain/@v/v0.0.1-go$want.linux-amd64.zip"
  python3 - "$url" "$zip" "$dir/x" <<'PY' || { rm -rf "$dir"; echo "[go] FATAL: could not fetch $url; install Go $want by hand" >&2; return 1; }
import os, stat, sys, urllib.request, zipfile
url, target, out = sys.argv[1:]
urllib.request.urlretrieve(url, target)
with zipfile.ZipFile(target) as z:
    z.extractall(out)
for root, _, files in os.walk(out):  # module zips keep no file modes: the tools must be executable
    if os.sep + "bin" in root or os.sep + "pkg" + os.sep + "tool" in root:
        for f in files:
            p = os.path.join(root, f)
            os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
  mkdir -p "$(dirname "$cache")"
  rm -rf "$cache"
  mv "$dir/x/golang.org/toolchain@v0.0.1-go$want.linux-amd64" "$cache"
  rm -rf "$dir"
  export PATH="$cache/bin:$PATH"
  echo "[go] $(go version) at $cache" >&2
}
