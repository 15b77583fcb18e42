#!/bin/sh
# Generates throwaway TLS material for tests with the openssl CLI.
#
#   make-test-certs.sh OUT_DIR P12_PASSWORD
#
# Writes into OUT_DIR:
#   ca.pem            root CA to use as the client's trusted_root
#   server.p12        server identity for pkcs12 (password P12_PASSWORD): the server key and
#                     certificate (SANs: DNS localhost, IP 127.0.0.1, IP ::1) plus the intermediate CA,
#                     so verification also exercises the chain sent from the archive
#   server-legacy.p12 the same in the OpenSSL 1.x format (RC2/3DES), as older rathole setups have
#                     (only when this openssl can write it)
#   server.pem, server.key, chain.pem   the same material in PEM form
#   other-ca.pem      an unrelated root CA (a client trusting only it must refuse the server)
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 OUT_DIR P12_PASSWORD" >&2
    exit 2
fi
out=$1
pass=$2
mkdir -p "$out"
cd "$out"

days=3650
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1"

cat > ca.ext <<'EOF'
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

cat > server.ext <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

# Root CA (self-signed).
openssl req -x509 $ec -nodes -keyout ca.key -out ca.pem -days $days \
    -subj "/CN=rathole test root CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# Intermediate CA signed by the root.
openssl req $ec -nodes -keyout intermediate.key -out intermediate.csr \
    -subj "/CN=rathole test intermediate CA" 2>/dev/null
openssl x509 -req -in intermediate.csr -CA ca.pem -CAkey ca.key -set_serial 0x$(openssl rand -hex 8) \
    -days $days -extfile ca.ext -out chain.pem 2>/dev/null

# Server certificate signed by the intermediate.
openssl req $ec -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
openssl x509 -req -in server.csr -CA chain.pem -CAkey intermediate.key \
    -set_serial 0x$(openssl rand -hex 8) -days $days -extfile server.ext -out server.pem 2>/dev/null

openssl pkcs12 -export -out server.p12 -inkey server.key -in server.pem -certfile chain.pem \
    -name "rathole test server" -passout "pass:$pass"
openssl pkcs12 -export -legacy -out server-legacy.p12 -inkey server.key -in server.pem \
    -certfile chain.pem -passout "pass:$pass" 2>/dev/null || rm -f server-legacy.p12

# An unrelated root CA.
openssl req -x509 $ec -nodes -keyout other-ca.key -out other-ca.pem -days $days \
    -subj "/CN=rathole unrelated CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

rm -f ca.ext server.ext intermediate.csr server.csr
