#!/usr/bin/env bash
# Dev certificates for ferrymq: a CA, a server certificate (SAN localhost,
# 127.0.0.1 and the compose host names) and a client certificate whose CN
# becomes the MQTT username under mutual TLS.
#   certs/gen.sh [OUT_DIR] [CLIENT_CN]
# Not for production: keys are unencrypted and the CA is throwaway.
set -euo pipefail
out="${1:-$(dirname "$0")/dev}"
cn="${2:-device-1}"
mkdir -p "$out"
cd "$out"
days=825

openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days "$days" \
  -subj "/CN=ferrymq dev CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

cat > server.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:ferrymq,DNS:node-a1,DNS:node-a2,DNS:node-a3,DNS:node-b1,DNS:node-b2,DNS:node-l1,DNS:node-l2,DNS:gateway
EXT
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
  -days "$days" -extfile server.ext 2>/dev/null

cat > client.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT
openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=$cn" 2>/dev/null
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem \
  -days "$days" -extfile client.ext 2>/dev/null

rm -f server.csr client.csr server.ext client.ext ca.srl
echo "certificates in $out: ca.pem server.pem server.key client.pem client.key (client CN=$cn)"
