# Client TLS and etcd auth for the measurement scripts (source it; it is
# not run alone). Needs openssl and etcdctl.

# `make_certs DIR`: a throwaway CA and a certificate for 127.0.0.1 signed
# by it, as DIR/ca.pem, DIR/server.pem and DIR/server.key.
make_certs() {
    local d=$1
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$d/ca.key" -out "$d/ca.pem" -subj /CN=bench-ca 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/server.key" -out "$d/server.csr" -subj /CN=bench-server 2>/dev/null
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -CAcreateserial -days 2 -out "$d/server.pem" \
        -extfile <(printf 'subjectAltName=IP:127.0.0.1') 2>/dev/null
}

# `enable_auth CA ENDPOINT`: root, and a `bench` user (password
# bench-password) whose role reads and writes bench/, then auth on.
enable_auth() {
    local e=(env ETCDCTL_API=3 etcdctl --cacert "$1" --endpoints "$2")
    "${e[@]}" user add root:root-password >/dev/null
    "${e[@]}" role add root >/dev/null
    "${e[@]}" user grant-role root root >/dev/null
    "${e[@]}" user add bench:bench-password >/dev/null
    "${e[@]}" role add bench >/dev/null
    "${e[@]}" role grant-permission bench readwrite --prefix bench/ >/dev/null
    "${e[@]}" user grant-role bench bench >/dev/null
    "${e[@]}" auth enable >/dev/null
}
