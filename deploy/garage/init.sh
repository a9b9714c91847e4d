#!/bin/sh
# Prepares the single-node Garage of deploy/compose.yaml through its admin API (v2):
# assigns the layout, imports the access key the Strata services use and creates the bucket
# with read/write/owner for that key. Idempotent: a second run changes nothing.
# Needs only a POSIX sh, sed and curl (the curlimages/curl image).
set -eu

ADMIN_URL="${GARAGE_ADMIN_URL:-http://garage:3903}"
ADMIN_TOKEN="${GARAGE_ADMIN_TOKEN:?GARAGE_ADMIN_TOKEN is required}"
BUCKET="${S3_BUCKET:?S3_BUCKET is required}"
ACCESS_KEY_ID="${S3_ACCESS_KEY_ID:?S3_ACCESS_KEY_ID is required}"
# The secret comes from S3_SECRET_ACCESS_KEY or, preferably, a file (a compose secret).
if [ -n "${S3_SECRET_ACCESS_KEY_FILE:-}" ]; then
  SECRET_ACCESS_KEY=$(tr -d ' \t\r\n' <"$S3_SECRET_ACCESS_KEY_FILE")
else
  SECRET_ACCESS_KEY="${S3_SECRET_ACCESS_KEY:?S3_SECRET_ACCESS_KEY or S3_SECRET_ACCESS_KEY_FILE is required}"
fi

# admin METHOD ENDPOINT [JSON]: prints the response body, fails on an HTTP error.
admin() {
  if [ $# -ge 3 ]; then
    curl -fsS -X "$1" -H "Authorization: Bearer $ADMIN_TOKEN" \
      -H 'Content-Type: application/json' --data "$3" "$ADMIN_URL/v2/$2"
  else
    curl -fsS -X "$1" -H "Authorization: Bearer $ADMIN_TOKEN" "$ADMIN_URL/v2/$2"
  fi
}

attempt=0
# The admin API pretty-prints JSON: `flat` removes the whitespace before sed picks fields.
flat() { tr -d ' \t\r\n'; }

until status_json=$(admin GET GetClusterStatus 2>/dev/null); do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 60 ]; then
    echo "garage-init: the admin API at $ADMIN_URL did not answer" >&2
    exit 1
  fi
  sleep 1
done
status=$(printf '%s' "$status_json" | flat)

node_id=$(printf '%s' "$status" | sed -n 's/.*"nodes":\[{"id":"\([0-9a-f]\{64\}\)".*/\1/p')
if [ -z "$node_id" ]; then
  echo "garage-init: no node id in GetClusterStatus" >&2
  exit 1
fi
layout_version=$(printf '%s' "$status" | sed -n 's/.*"layoutVersion":\([0-9]*\).*/\1/p')
if [ "${layout_version:-0}" = "0" ]; then
  echo "garage-init: assigning the layout to node $node_id"
  admin POST UpdateClusterLayout \
    "{\"roles\":[{\"id\":\"$node_id\",\"zone\":\"dc1\",\"capacity\":10000000000,\"tags\":[]}]}" >/dev/null
  admin POST ApplyClusterLayout '{"version":1}' >/dev/null
fi

if admin GET "GetKeyInfo?id=$ACCESS_KEY_ID" >/dev/null 2>&1; then
  echo "garage-init: key $ACCESS_KEY_ID exists"
else
  echo "garage-init: importing key $ACCESS_KEY_ID"
  admin POST ImportKey \
    "{\"accessKeyId\":\"$ACCESS_KEY_ID\",\"secretAccessKey\":\"$SECRET_ACCESS_KEY\",\"name\":\"strata\"}" >/dev/null
fi

if bucket_json=$(admin GET "GetBucketInfo?globalAlias=$BUCKET" 2>/dev/null); then
  echo "garage-init: bucket $BUCKET exists"
else
  echo "garage-init: creating bucket $BUCKET"
  bucket_json=$(admin POST CreateBucket "{\"globalAlias\":\"$BUCKET\"}")
fi
bucket_id=$(printf '%s' "$bucket_json" | flat | sed -n 's/^{"id":"\([0-9a-f]\{64\}\)".*/\1/p')
if [ -z "$bucket_id" ]; then
  echo "garage-init: no bucket id in the response" >&2
  exit 1
fi
admin POST AllowBucketKey \
  "{\"bucketId\":\"$bucket_id\",\"accessKeyId\":\"$ACCESS_KEY_ID\",\"permissions\":{\"read\":true,\"write\":true,\"owner\":true}}" >/dev/null
echo "garage-init: bucket $BUCKET ready for key $ACCESS_KEY_ID"
