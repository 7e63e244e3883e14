#!/bin/sh
# TEST DOUBLE: stands in for /usr/share/bm-checks/check_core.sh of BlueMind's
# bm-checks package (lab only): exit 0 when bm-core answers CORE_STATE_RUNNING,
# 2 otherwise (not running, not installed, not answering).
url=${BM_CHECK_CORE_URL:-http://127.0.0.1:8090/api/system/installation/state}
state=$(python3 -c '
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    print(json.loads(response.read().decode()))
' "$url" 2>/dev/null) || state=UNREACHABLE
if [ "$state" = CORE_STATE_RUNNING ]; then
    echo "OK: bm-core is $state"
    exit 0
fi
echo "CRITICAL: bm-core is ${state:-UNKNOWN}"
exit 2
