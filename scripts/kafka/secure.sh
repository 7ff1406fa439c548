# shellcheck shell=bash
# Sourced by scripts/kafka-local for --secure: certificates, secrets, the secured listeners.
#
# tls/ under the data dir holds, once made (never regenerated while it exists):
#   ca.crt ca.key                 a throwaway CA that signs both certificates below
#   broker.p12 truststore.p12     the broker's key and certificate, and the CA, for Java
#   client.crt client.key         a client certificate (CN=$KAFKA_SECURE_USER) for mTLS
#   store.pass password           the stores' password; the user's password (SCRAM and PLAIN)
# The broker certificate names 127.0.0.1 and localhost, so clients verify the host name.

# The password of $KAFKA_SECURE_USER: KAFKA_SECURE_PASSWORD, else the one kept in tls/.
secure_password() {
  if [[ -n "${KAFKA_SECURE_PASSWORD:-}" ]]; then
    printf '%s' "$KAFKA_SECURE_PASSWORD"
  elif [[ -s "$TLS_DIR/password" ]]; then
    cat "$TLS_DIR/password"
  else
    die "no $TLS_DIR/password: start the secured broker once (it creates one)"
  fi
}

_secret() { head -c 18 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

# _sign NAME SUBJECT EXT: a key and a certificate signed by the CA, with extensions EXT.
_sign() {
  local name=$1 subject=$2 ext=$3
  openssl req -newkey rsa:2048 -nodes -keyout "$TLS_DIR/$name.key" -subj "$subject" \
    -out "$TLS_DIR/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$TLS_DIR/$name.ext"
  openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$TLS_DIR/$name.ext" \
    -out "$TLS_DIR/$name.crt" 2>/dev/null
  rm -f "$TLS_DIR/$name.csr" "$TLS_DIR/$name.ext"
}

make_certs() {
  [[ -f "$TLS_DIR/.complete" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl not found (Debian: apt-get install openssl)"
  local keytool
  keytool="$(dirname "$(java_cmd)")/keytool"
  [[ -x "$keytool" ]] || keytool="$(command -v keytool)" || die "keytool not found (it comes with Java)"
  log "generating a CA, a broker and a client certificate in $TLS_DIR"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  local pass
  pass="$(_secret)"
  printf '%s' "$pass" >"$TLS_DIR/store.pass"
  if [[ -n "${KAFKA_SECURE_PASSWORD:-}" ]]; then
    printf '%s' "$KAFKA_SECURE_PASSWORD" >"$TLS_DIR/password"
  else
    _secret >"$TLS_DIR/password"
  fi
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kafka-local test CA" \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" 2>/dev/null ||
    die "openssl could not make the CA"
  _sign broker "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth" || die "openssl could not sign the broker certificate"
  _sign client "/CN=$KAFKA_SECURE_USER" "extendedKeyUsage=clientAuth" ||
    die "openssl could not sign the client certificate"
  openssl pkcs12 -export -name broker -in "$TLS_DIR/broker.crt" -inkey "$TLS_DIR/broker.key" \
    -certfile "$TLS_DIR/ca.crt" -passout "pass:$pass" -out "$TLS_DIR/broker.p12" ||
    die "openssl could not write the broker keystore"
  "$keytool" -importcert -noprompt -alias ca -file "$TLS_DIR/ca.crt" -storetype PKCS12 \
    -keystore "$TLS_DIR/truststore.p12" -storepass "$pass" >/dev/null 2>&1 ||
    die "keytool could not write the truststore"
  rm -f "$TLS_DIR/broker.key" "$TLS_DIR/ca.srl"
  chmod 600 "$TLS_DIR"/*
  : >"$TLS_DIR/.complete"
}

# The listeners and security lines appended to the rendered server.properties (later keys win).
secure_properties() {
  local pass user
  pass="$(cat "$TLS_DIR/store.pass")"
  user="$KAFKA_SECURE_USER"
  cat <<EOF

############################# Secured listeners (kafka-local --secure) #############################
listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,SSL://127.0.0.1:$KAFKA_SSL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,SSL://127.0.0.1:$KAFKA_SSL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
# the broker talks to itself over mTLS with its own certificate
inter.broker.listener.name=SSL
listener.name.ssl.ssl.client.auth=required
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS_DIR/truststore.p12
ssl.truststore.password=$pass
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$user="$(secure_password)";
EOF
}

# True once the SASL_SSL listener completes a TLS handshake (the socket is bound before the
# broker processes requests; a handshake needs its network threads).
secure_broker_answers() {
  timeout 5 openssl s_client -connect "127.0.0.1:$1" -CAfile "$TLS_DIR/ca.crt" \
    -verify_return_error -brief </dev/null >/dev/null 2>&1
}

# The STREAM_* variables for the SASL_SSL listener with SCRAM-SHA-512 (printed by start).
secure_exports() {
  cat <<EOF
export STREAM_KAFKA_URL=kafka://127.0.0.1:$1
export STREAM_KAFKA__SECURITY_PROTOCOL=SASL_SSL
export STREAM_KAFKA__SASL_MECHANISM=SCRAM-SHA-512
export STREAM_KAFKA__SASL_USERNAME=$KAFKA_SECURE_USER
export STREAM_KAFKA__SASL_PASSWORD=\$(cat $TLS_DIR/password)
export STREAM_KAFKA__SSL_CAFILE=$TLS_DIR/ca.crt
# mTLS instead: STREAM_KAFKA_URL=kafka://127.0.0.1:$KAFKA_SSL_PORT STREAM_KAFKA__SECURITY_PROTOCOL=SSL
#   STREAM_KAFKA__SSL_CERTFILE=$TLS_DIR/client.crt STREAM_KAFKA__SSL_KEYFILE=$TLS_DIR/client.key
EOF
}
