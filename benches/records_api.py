"""The records benches' client: creates the bench collection and a user, and seeds
records, over one keep-alive connection, with the same requests for every server
(benches/pocketbase.sh and benches/records_instructions.sh).

    records_api.py setup BASE ADMIN_EMAIL ADMIN_PASSWORD USER_EMAIL USER_PASSWORD TARGET
        -> prints the superuser token and the user token
    records_api.py seed BASE TOKEN START END   -> seeds records START..END, prints one id
    records_api.py repeat BASE N METHOD PATH [TOKEN [BODY]]   -> sends one request N times
"""
import http.client, json, sys, urllib.parse

def call(conn, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = token
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        sys.exit(f"{method} {path}: {response.status} {data[:300]!r}")
    return json.loads(data) if data else None

command, base = sys.argv[1], urllib.parse.urlparse(sys.argv[2])
conn = http.client.HTTPConnection(base.hostname, base.port)
if command == "setup":
    admin_email, admin_password, user_email, user_password = sys.argv[3:7]
    login = {"identity": admin_email, "password": admin_password}
    admin = call(conn, "POST", "/api/collections/_superusers/auth-with-password", login)["token"]
    if sys.argv[7] == "pocketbase":
        call(conn, "PATCH", "/api/settings", {"batch": {"enabled": True, "maxRequests": 50}}, admin)
    call(conn, "POST", "/api/collections", {
        "name": "bench", "type": "base",
        "listRule": "", "viewRule": "", "createRule": "@request.auth.id != ''",
        "fields": [{"name": "title", "type": "text"}, {"name": "n", "type": "number"}],
        "indexes": ["CREATE INDEX idx_bench_n ON bench (n)"],
    }, admin)
    call(conn, "POST", "/api/collections/users/records",
         {"email": user_email, "password": user_password, "passwordConfirm": user_password})
    user = call(conn, "POST", "/api/collections/users/auth-with-password",
                {"identity": user_email, "password": user_password})["token"]
    print(admin, user)
elif command == "seed":
    token, start, end = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    for first in range(start, end, 50):
        requests = [{"method": "POST", "url": "/api/collections/bench/records",
                     "body": {"title": f"record {n}", "n": n}} for n in range(first, min(first + 50, end))]
        call(conn, "POST", "/api/batch", {"requests": requests}, token)
    print(call(conn, "GET", "/api/collections/bench/records?perPage=1&filter=" + urllib.parse.quote("n >= 0"))["items"][0]["id"])
elif command == "repeat":
    n, method, path = int(sys.argv[3]), sys.argv[4], sys.argv[5]
    token = sys.argv[6] if len(sys.argv) > 6 else None
    body = json.loads(sys.argv[7]) if len(sys.argv) > 7 else None
    for _ in range(n):
        call(conn, method, path, body, token)
