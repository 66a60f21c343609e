-- auth-sidecar for Apache httpd 2.4: an access checker for mod_lua.
--
-- Apache has no built-in equivalent of nginx's auth_request. This script gives
-- it one: before Apache proxies a request, it asks the sidecar's /auth about it
-- and either lets it through with the sidecar's identity headers, or answers
-- the client itself (302 to the login page, 400, 401, 403, 503).
--
-- Needs mod_lua and LuaSocket (Debian: `a2enmod lua` and the lua-socket
-- package). apache-site.conf shows where it goes:
--
--     LuaHookAccessChecker /etc/apache2/auth-sidecar/auth-sidecar.lua check early
--
-- The sidecar runs in its default `server.mode: auth_request`: it answers
-- browsers without a session with 401 plus a Location, and this script turns
-- that into the redirect.

local http = require("socket.http")
local ltn12 = require("ltn12")

-- Where the sidecar listens. Keep it on 127.0.0.1 (or a private network):
-- whoever can reach /auth can ask it about any password.
local SIDECAR_URL = "http://127.0.0.1:9180/auth"

-- Seconds to wait for each step (connect, send, each read). The sidecar asks the
-- directory within its own timeouts; this only guards against a hung sidecar.
http.TIMEOUT = 10

-- The identity headers the sidecar answers with (its `headers:` section).
-- Renamed headers must be renamed here too, or the new name can be forged.
local IDENTITY = {
  "Remote-User", "Remote-User-First-Name", "Remote-User-Last-Name",
  "Remote-User-Email", "Remote-User-Group", "Remote-User-Staff", "Remote-User-Auth-Methods",
  "Remote-User-Superuser", "Remote-User-Assertion",
}

-- Every client header whose name, lower-cased with "_" read as "-", starts with
-- this is removed before anything else happens. Apache forwards names with
-- underscores (Remote_User) and any letter case, and some application servers
-- read Remote_User as Remote-User, so removing only the exact names is not enough.
local STRIP_PREFIX = "remote-user"

local function strip_client_identity(r)
  for name in pairs(r:headers_in_table()) do
    if name:lower():gsub("_", "-"):sub(1, #STRIP_PREFIX) == STRIP_PREFIX then
      -- Removes every header of that name, whatever its case and count.
      r.headers_in[name] = nil
    end
  end
end

-- The client's request headers the sidecar reads: credentials, and what tells a
-- browser (gets the login page) from a script (gets a 401).
local PASSED = { "Cookie", "Authorization", "Accept", "X-Requested-With" }
-- htmx's in-page requests (NetBox's tables): the sidecar answers them with
-- HX-Redirect to the login page, back to the page the browser shows.
PASSED[#PASSED + 1] = "HX-Request"
PASSED[#PASSED + 1] = "HX-Current-URL"

-- What the client asked for, as separate values the sidecar parses strictly (a
-- malformed one is a 400): the Host header, which is what the application
-- receives (ProxyPreserveHost On), and the request target exactly as the client
-- wrote it (query included, not decoded). Apache itself resolves dot segments
-- (`/admin/../x`) before it proxies, so the raw target is what must be judged:
-- the sidecar refuses dot segments, encoded slashes and backslashes with 400.
-- Never one URL built from the Host header: `Host: app.test?` would move the
-- real path into its query.
local function original_request(r)
  local scheme = r.is_https and "https" or "http"
  local headers = {
    ["X-Forwarded-Proto"] = scheme,
    ["X-Forwarded-Host"] = r.headers_in["Host"] or "",
    -- An absolute-form target ("GET http://host/path") keeps only its path, as
    -- mod_proxy sends it to the application.
    ["X-Forwarded-Uri"] = (r.unparsed_uri:gsub("^%a[%w+.-]*://[^/]*", "")),
    ["X-Forwarded-Method"] = r.method,
    -- The address Apache sees, never one the client wrote in its own
    -- X-Forwarded-For: the sidecar bans brute-force attempts by this address.
    -- Behind another proxy, configure mod_remoteip so useragent_ip is right.
    ["X-Forwarded-For"] = r.useragent_ip,
    ["X-Real-IP"] = r.useragent_ip,
    -- mod_unique_id's id of this request (nil without the module), which the
    -- sidecar logs as request_id; apache-site.conf gives the application the same.
    ["X-Request-ID"] = r.subprocess_env["UNIQUE_ID"],
  }
  for _, name in ipairs(PASSED) do
    headers[name] = r.headers_in[name]
  end
  return headers
end

-- The host Apache routes on (r.hostname: the request line's host of an
-- absolute-form request, else the Host header's, lower-cased, without port and
-- trailing dot) must be the one the sidecar judges and the application gets.
local function routed_host_differs(r)
  local host = (r.headers_in["Host"] or ""):lower():gsub(":%d*$", ""):gsub("%.$", "")
  return host:gsub("^%[(.*)%]$", "%1") ~= (r.hostname or ""):lower():gsub("^%[(.*)%]$", "%1")
end

-- One GET /auth. Returns the status and the answer's headers (names lower-cased),
-- or nil and an error message when the sidecar cannot be reached.
local function ask_sidecar(r)
  local ok, status, headers = http.request({
    url = SIDECAR_URL,
    method = "GET",
    headers = original_request(r),
    sink = ltn12.sink.null(),
    redirect = false,
  })
  if not ok then
    return nil, status
  end
  return status, headers
end

-- The Basic password is the user's directory password: it must stop here, not
-- reach the application (which would see, and might log, it). Any value whose
-- first letters are "basic", whatever comes before them (a tab, a no-break
-- space, U+3000...), or that has "basic" after a comma (Apache joins repeated
-- headers with ", "), is removed: wider than what the sidecar accepts as Basic.
-- Any other Authorization (NetBox's "Token ...", "Bearer ...") passes unchanged.
local function strip_basic_credentials(r)
  local authorization = (r.headers_in["Authorization"] or ""):lower()
  if authorization:find("^[^a-z]*basic") or authorization:find(",[^a-z]*basic") then
    r.headers_in["Authorization"] = nil
  end
end

-- mod_proxy removes every request header named in the client's Connection header
-- (as hop-by-hop) after this script has run, so `Connection: Remote-User` would
-- delete the sidecar's identity on its way to the application. Only the tokens
-- Apache itself acts on are kept.
local HOP_TOKENS = { close = true, ["keep-alive"] = true, upgrade = true }

local function keep_only_hop_tokens(r)
  local connection = r.headers_in["Connection"]
  if not connection then
    return
  end
  local kept = {}
  for token in connection:gmatch("[^,%s]+") do
    if HOP_TOKENS[token:lower()] then
      kept[#kept + 1] = token
    end
  end
  r.headers_in["Connection"] = #kept > 0 and table.concat(kept, ", ") or nil
end

local function allow(r, answer)
  for _, name in ipairs(IDENTITY) do
    local value = answer[name:lower()]
    if value then
      r.headers_in[name] = value
    end
  end
  -- The user name, for Apache's access log (%u) and for other modules.
  r.user = answer[IDENTITY[1]:lower()]
  strip_basic_credentials(r)
  keep_only_hop_tokens(r)
  return apache2.OK
end

-- Apache answers the client itself; err_headers_out are kept on error answers.
local function refuse(r, status, answer)
  if status == 401 and answer["location"] then
    -- A browser without a session: send it to the login page. Apache builds
    -- a redirect's answer from headers_out, not err_headers_out.
    r.headers_out["Location"] = answer["location"]
    return 302
  end
  if status == 401 and answer["hx-redirect"] then
    -- An in-page request of htmx: it loads the login page as a whole page.
    r.err_headers_out["HX-Redirect"] = answer["hx-redirect"]
  end
  if status == 401 and answer["www-authenticate"] then
    r.err_headers_out["WWW-Authenticate"] = answer["www-authenticate"]
  end
  return status
end

function check(r)
  strip_client_identity(r)
  -- Apache joins repeated headers with ", ", so two Authorization headers reach
  -- this script (and would reach the sidecar) as one. Credentials that may be
  -- Basic among several are ambiguous: refuse them, as the sidecar refuses two
  -- Authorization headers.
  local authorization = (r.headers_in["Authorization"] or ""):lower()
  if authorization:find(",") and (authorization:find("^[^a-z]*basic") or authorization:find(",[^a-z]*basic")) then
    r:err("auth-sidecar: refusing several credentials in Authorization")
    return 400
  end
  if routed_host_differs(r) then
    r:err("auth-sidecar: refusing a request for host " .. tostring(r.hostname) .. " with Host "
          .. tostring(r.headers_in["Host"]))
    return 400
  end
  local status, answer = ask_sidecar(r)
  if status == nil then
    r:err("auth-sidecar unreachable at " .. SIDECAR_URL .. ": " .. tostring(answer))
    return 503
  end
  if status == 400 then
    -- A malformed or ambiguous request (a bad Host, a dot segment, two
    -- Authorization headers...): the sidecar logged why.
    return 400
  end
  if status ~= 200 and status ~= 401 and status ~= 403 then
    -- A 503 while the directory is down, a 5xx from a broken sidecar: refuse.
    -- Nothing passes unchecked.
    r:err("auth-sidecar answered " .. status .. "; refusing with 503")
    return 503
  end
  -- A sidecar may renew or clear the session cookie with any answer.
  -- err_headers_out reach the client on the application's answer and on
  -- Apache's own refusal alike. (LuaSocket joins repeated headers with ", ";
  -- /auth sends at most one cookie.)
  if answer["set-cookie"] then
    r.err_headers_out["Set-Cookie"] = answer["set-cookie"]
  end
  if status == 200 then
    return allow(r, answer)
  end
  return refuse(r, status, answer)
end
