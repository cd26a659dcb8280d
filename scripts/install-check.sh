#!/usr/bin/env bash
# Installs libmgr into a scratch prefix with `make install`, then builds a small C
# program against it with nothing but pkg-config — shared and static — and runs
# both. Proves the install layout, the pkg-config file and the SONAME symlinks.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make -s install PREFIX="$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"

# The daemon and its control tool come along, and nothing installed carries
# debug info.
for f in "$prefix/bin/mgrd" "$prefix/bin/mgrctl" "$prefix/lib/libmgr.so.0" "$prefix/lib/libmgr.a"; do
  [ -e "$f" ] || { echo "install-check: $f was not installed"; exit 1; }
  if readelf -S "$f" 2>/dev/null | grep -q '\.debug_info'; then
    echo "install-check: $f carries debug info"; exit 1
  fi
done
"$prefix/bin/mgrd" --version | grep -q '^mgrd ' || { echo "install-check: installed mgrd does not run"; exit 1; }

cat > "$prefix/check.c" <<'C'
#include <mgr.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  mgr_server *server = NULL;
  mgr_value *list = mgr_value_list();
  const char *s = NULL;
  size_t len = 0;
  const mgr_value *item = NULL;
  if (mgr_server_new("127.0.0.1:0", (const uint8_t *)"k", 1, NULL, &server) != MGR_OK) {
    fprintf(stderr, "mgr_server_new: %s\n", mgr_last_error());
    return 1;
  }
  if (mgr_server_register_builtins(server) != MGR_OK) return 1;
  if (strncmp(mgr_server_address(server), "127.0.0.1:", 10) != 0) return 1;
  if (mgr_server_process(server) != MGR_OK) return 1;
  mgr_value_append(list, mgr_value_str("installed"));
  if (mgr_value_get_item(list, 0, &item) != MGR_OK) return 1;
  if (mgr_value_get_str(item, &s, &len) != MGR_OK || len != 9 || memcmp(s, "installed", 9) != 0)
    return 1;
  mgr_value_free(list);
  mgr_server_free(server);
  printf("install-check: ok\n");
  return 0;
}
C

cc -std=c99 -Wall -Wextra -Werror -pedantic "$prefix/check.c" -o "$prefix/check-shared" \
  $(pkg-config --cflags --libs mgr) -Wl,-rpath,"$prefix/lib"
"$prefix/check-shared"
readelf -d "$prefix/check-shared" | grep -q 'NEEDED.*libmgr.so.0' \
  || { echo "install-check: not linked against the SONAME libmgr.so.0"; exit 1; }

cc -std=c99 -Wall -Wextra -Werror -pedantic "$prefix/check.c" -o "$prefix/check-static" \
  $(pkg-config --cflags mgr) "$prefix/lib/libmgr.a" $(pkg-config --libs-only-other --static mgr) \
  $(pkg-config --static --libs-only-l mgr | sed 's/-lmgr//')
"$prefix/check-static"
echo "install-check: shared and static builds from the installed prefix passed"
