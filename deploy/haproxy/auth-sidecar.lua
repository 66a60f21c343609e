-- auth-sidecar for HAProxy 2.6+: the `lua.auth-sidecar` http-request action.
--
-- HAProxy has no built-in equivalent of nginx's auth_request. This action gives
-- it one: it asks the sidecar's /auth about the current request with HAProxy's
-- own HTTP client (no extra packages) and stores the answer in variables;
-- haproxy.cfg then decides with ordinary http-request rules:
--
--   txn.auth_status      the sidecar's status (200, 400, 401, 403...; 503 if unreachable)
--   txn.auth_location    Location of a 401: where to send a browser
--   txn.auth_challenge   WWW-Authenticate of a 401
--   txn.auth_hx_redirect HX-Redirect of a 401: the login page, for htmx requests
--   txn.auth_set_cookie  a session cookie to renew or clear
--   txn.auth_<header>    each identity header of a 200, e.g. txn.auth_remote_user_email
--
-- Load it in the global section:  lua-load /etc/haproxy/auth-sidecar.lua
--
-- The sidecar runs in its default `server.mode: auth_request`: it answers
-- browsers without a session with 401 plus a Location, and haproxy.cfg turns
-- that into the redirect.

-- Where the sidecar listens. Keep it on 127.0.0.1 (or a private network):
-- whoever can reach /auth can ask it about any password.
local SIDECAR_URL = "http://127.0.0.1:9180/auth"

-- Milliseconds to wait for an answer. Keep it above the sidecar's own worst
-- case (ldap.connect_timeout + ldap.timeout): HAProxy 2.6's client tries 4 times
-- in all, so a hung sidecar holds a request for up to 4 x this, and a slow one
-- cut short would be asked (and the directory bound) again.
local TIMEOUT_MS = 10000

-- The identity headers the sidecar answers with (its `headers:` section), as
-- HAProxy sees them: lower-case. Each becomes txn.auth_<name with "-" as "_">.
-- Renamed headers must be renamed here and in haproxy.cfg.
local IDENTITY = {
  "remote-user", "remote-user-first-name", "remote-user-last-name",
  "remote-user-email", "remote-user-group", "remote-user-staff", "remote-user-auth-methods",
  "remote-user-superuser", "remote-user-assertion",
}

-- The client's request headers the sidecar reads: credentials, and what tells a
-- browser (gets the login page) from a script (gets a 401).
-- x-request-id: haproxy.cfg's own id of this request, which the sidecar logs.
local PASSED = { "cookie", "authorization", "accept", "x-requested-with", "x-request-id" }
-- htmx's in-page requests (NetBox's tables): the sidecar answers them with
-- HX-Redirect to the login page, back to the page the browser shows.
PASSED[#PASSED + 1] = "hx-request"
PASSED[#PASSED + 1] = "hx-current-url"

-- What the client asked for, as separate values the sidecar parses strictly (a
-- malformed one is a 400): the Host header, exactly as the application receives
-- it, and the path and query exactly as the client wrote them (not decoded,
-- without the scheme and host of an absolute-form request line). HAProxy does
-- not resolve dot segments: the sidecar refuses them (`/admin/../x`, `%2e%2e`),
-- encoded slashes and backslashes with 400, so what it judges is what the
-- application dispatches on. Never one URL built from the Host header:
-- `Host: app.test?` would move the real path into its query.
-- Returns nil when the request has no single Host header to judge.
local function original_request(txn)
  local scheme = txn.f:ssl_fc() == 1 and "https" or "http"
  local client_headers = txn.http:req_get_headers()
  local hosts = client_headers["host"]
  if not hosts or hosts[0] == nil or hosts[1] ~= nil then
    return nil
  end
  local method = txn.f:method()
  -- The address HAProxy sees, never one the client wrote in its own
  -- X-Forwarded-For: the sidecar bans brute-force attempts by this address.
  local client = txn.f:src()
  local headers = {
    ["x-forwarded-proto"] = { scheme },
    ["x-forwarded-host"] = { hosts[0] },
    ["x-forwarded-uri"] = { txn.f:pathq() or "/" },
    ["x-forwarded-method"] = { method },
    ["x-forwarded-for"] = { client },
    ["x-real-ip"] = { client },
  }
  for _, name in ipairs(PASSED) do
    -- Every value, in order (HAProxy numbers them from 0).
    headers[name] = client_headers[name]
  end
  return headers
end

-- The first value of a header in the sidecar's answer, or nil.
local function first(answer_headers, name)
  local values = answer_headers[name]
  return values and values[0]
end

local function check(txn)
  local request = original_request(txn)
  if request == nil then
    -- No Host, or several: nothing the sidecar could judge. haproxy.cfg answers 400.
    txn:set_var("txn.auth_status", 400)
    return
  end
  local answer = core.httpclient():get({
    url = SIDECAR_URL,
    headers = request,
    timeout = TIMEOUT_MS,
  })
  -- HAProxy's client reports an unreachable sidecar as a 503 of its own (after
  -- 4 attempts, about 3 s). Without any status, 0 stands in: in Lua 0 is true,
  -- so haproxy.cfg compares numbers and never tests a status for truth.
  local status = answer and tonumber(answer.status) or 0
  txn:set_var("txn.auth_status", status)
  if status == 400 then
    -- A malformed or ambiguous request: the sidecar logged why; haproxy.cfg answers 400.
    return
  end
  if status ~= 200 and status ~= 401 and status ~= 403 then
    core.Alert("auth-sidecar at " .. SIDECAR_URL .. " answered " .. status .. "; refusing with 503\n")
    return
  end
  local headers = answer.headers or {}
  -- Variables are set only for headers present, so haproxy.cfg can test them
  -- with `-m found`.
  local optional = {
    auth_set_cookie = first(headers, "set-cookie"),
    auth_location = status == 401 and first(headers, "location"),
    auth_challenge = status == 401 and first(headers, "www-authenticate"),
    auth_hx_redirect = status == 401 and first(headers, "hx-redirect"),
  }
  for var, value in pairs(optional) do
    if value then
      txn:set_var("txn." .. var, value)
    end
  end
  if status == 200 then
    -- Always every identity header, empty when the sidecar left it out, so
    -- haproxy.cfg replaces each client header of these names.
    for _, name in ipairs(IDENTITY) do
      txn:set_var("txn.auth_" .. name:gsub("-", "_"), first(headers, name) or "")
    end
  end
end

core.register_action("auth-sidecar", { "http-req" }, check, 0)
