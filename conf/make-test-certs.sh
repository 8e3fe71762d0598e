#!/usr/bin/env bash
# Makes a self-signed test CA and certificates it signs, for TLS listeners in tests and
# examples. Never use these in production.
#
#   conf/make-test-certs.sh                          # conf/certs/{ca,edge}.{pem,key}: edge serves
#                                                    # localhost, api.example.com, *.example.com
#   conf/make-test-certs.sh DIR NAME SAN[,SAN...]    # DIR/NAME.{pem,key} for those DNS names,
#                                                    # signed by DIR/ca.{pem,key} (made if missing)
#
# Try it: curl --cacert conf/certs/ca.pem --resolve api.example.com:8443:127.0.0.1 \
#           https://api.example.com:8443/ping
set -euo pipefail

dir="${1:-$(dirname "$0")/certs}"
name="${2:-edge}"
sans="${3:-localhost,api.example.com,*.example.com}"
command -v openssl >/dev/null || {
	echo "openssl not found (apt-get install openssl)" >&2
	exit 1
}
mkdir -p "$dir"

if [[ ! -f $dir/ca.pem || ! -f $dir/ca.key ]]; then
	openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
		-subj "/CN=Portcullis Test CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
fi

san_list=""
IFS=',' read -ra names <<<"$sans"
for san in "${names[@]}"; do
	san_list+="${san_list:+,}DNS:$san"
done

openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=${names[0]}" \
	-keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
openssl x509 -req -sha256 -days 825 -in "$dir/$name.csr" \
	-CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
	-extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san_list") \
	-out "$dir/$name.pem" 2>/dev/null
rm -f "$dir/$name.csr" "$dir/ca.srl"
echo "$dir/$name.pem ($sans), signed by $dir/ca.pem"
