# Sourced by benches/front_of_house.sh and benches/proxy_instructions.sh, so that the
# throughput bench and the instruction counts measure the same servers, configured the
# same way: a 1 KiB and a 100 KiB static file, a proxied request and a cache hit.
#
# front_of_house_setup WORK WORKERS GATEHOUSE_PORT NGINX_PORT UPSTREAM_PORT writes into
# WORK: public/ (1k.txt, 100k.txt, index.html), upstream.conf (a one-worker nginx
# answering every path with a small, cacheable body), nginx.conf (static files from
# public/, /proxy/ proxied, /cached/ proxied through proxy_cache) and gatehouse.toml
# (the same routes; log level warn, no access log). Access logs are off on both.

front_of_house_setup() {
    local work=$1 workers=$2 gatehouse_port=$3 nginx_port=$4 upstream_port=$5
    mkdir -p "$work/public" "$work/cache" "$work/data"
    # Base64 of 3n random bytes is 4n bytes long: no `head` cutting a pipe short, which
    # under `pipefail` could fail the script with SIGPIPE.
    head -c 768 /dev/urandom | base64 -w 0 > "$work/public/1k.txt"
    head -c 76800 /dev/urandom | base64 -w 0 > "$work/public/100k.txt"
    echo '<h1>bench</h1>' > "$work/public/index.html"

    # The shared upstream: one nginx worker answering every path with a small, cacheable
    # body (12 bytes of text plus headers).
    cat > "$work/upstream.conf" <<EOC
user root;
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$upstream_port;
        location / {
            default_type text/plain;
            add_header Cache-Control "public, max-age=3600";
            return 200 "hello world\n";
        }
    }
}
EOC

    cat > "$work/nginx.conf" <<EOC
user root;
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    default_type application/octet-stream;
    types { text/plain txt; text/html html; }
    proxy_cache_path $work/cache levels=1:2 keys_zone=bench:10m max_size=100m;
    upstream app {
        server 127.0.0.1:$upstream_port;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/public;
        location /proxy/ {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /cached/ {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
        }
    }
}
EOC

    cat > "$work/gatehouse.toml" <<EOC
[server]
bind = "127.0.0.1:$gatehouse_port"
workers = $workers

[database]
url = "sqlite://$work/data/gatehouse.db?mode=rwc"
actors = 1

[static]
root = "$work/public"

[log]
level = "warn"
access_log = false

[upstreams.app]
servers = [{ url = "http://127.0.0.1:$upstream_port" }]

[[routes]]
path = "/api"
handler = "api"

[[routes]]
path = "/proxy"
handler = "proxy"
upstream = "app"

[[routes]]
path = "/cached"
handler = "proxy"
upstream = "app"
cache = true

[[routes]]
path = "/"
handler = "static"
EOC
}
