// The console page (docs/console.md). Talks only to /console/api/ on this origin; the server decides what this
// session may see and do. Everything from data is set as text (textContent), never parsed as HTML.
"use strict";

const PAGES = ["approvals", "activity", "tokens", "inspect"];
const APPROVALS_EVERY_MS = 1500;
const TOKENS_EVERY_MS = 3000;
const MAX_EVENTS = 500;
let session = null; // {csrf, operator, who, token_id?, chain?} from GET /console/api/session
let approvalsTimer = null;
let tokensTimer = null;
let stream = null;
let lastTokens = "";

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function say(message) {
  $("status").textContent = message || "";
}

class SignedOut extends Error {}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = session ? session.csrf : "";
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch("/console/api/" + path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "session") throw new SignedOut(data.reason);
  if (!response.ok) throw new Error(data.reason || `${response.status} ${response.statusText}`);
  return data;
}

// A failed call: a session that ended goes back to sign-in, anything else is said in the status line.
function failed(error) {
  if (error instanceof SignedOut) {
    showSignIn("Your session ended (signed out, expired, or its token revoked). Sign in again.");
  } else {
    say(error.message);
  }
}

// -- session ----------------------------------------------------------------------------------------------
async function boot() {
  try {
    session = await api("GET", "session");
  } catch {
    session = null;
  }
  if (session) showConsole();
  else showSignIn("");
}

function showSignIn(message) {
  stopAll();
  session = null;
  $("nav").hidden = true;
  $("who-box").hidden = true;
  for (const page of PAGES) $(page).hidden = true;
  $("sign-in-page").hidden = false;
  say(message);
  $("credential").focus();
}

function showConsole() {
  $("sign-in-page").hidden = true;
  $("nav").hidden = false;
  $("who-box").hidden = false;
  $("who").textContent = session.operator ? "Signed in as the operator" : `Signed in as ${session.who}`;
  say("");
  pollApprovals();
  route();
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = $("credential");
  try {
    session = await api("POST", "session", { credential: field.value });
    field.value = ""; // the page keeps no copy of the credential
    showConsole();
  } catch (error) {
    say(error.message);
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api("DELETE", "session");
  } catch (error) {
    if (!(error instanceof SignedOut)) say(error.message);
  }
  showSignIn("Signed out.");
});

function stopAll() {
  clearTimeout(approvalsTimer);
  clearTimeout(tokensTimer);
  if (stream) stream.close();
  stream = null;
  lastTokens = "";
}

// -- pages --------------------------------------------------------------------------------------------
function currentPage() {
  const hash = location.hash.slice(1);
  if (hash.startsWith("approval-")) return "approvals"; // the approval webhook links to /console#approval-<id>
  return PAGES.includes(hash) ? hash : "approvals";
}

function route() {
  if (!session) return;
  const page = currentPage();
  for (const name of PAGES) $(name).hidden = name !== page;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (page !== "activity" && stream) {
    stream.close();
    stream = null;
  }
  clearTimeout(tokensTimer);
  if (page === "activity") startActivity();
  if (page === "tokens") pollTokens();
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · agentcaps console`;
}

window.addEventListener("hashchange", route);

// -- approvals ----------------------------------------------------------------------------------------
function age(created) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(created)) / 1000));
  return seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
}

function money(m) {
  return m ? `${m.amount} ${m.currency}` : "none";
}

function approvalCard(a) {
  const reasonId = `reason-${a.id}`;
  const facts = el(
    "dl",
    {},
    el("dt", { text: "Tool" }), el("dd", { text: a.tool }),
    el("dt", { text: "Arguments" }), el("dd", { class: "mono", text: JSON.stringify(a.args) }),
    el("dt", { text: "Cost" }), el("dd", { text: money(a.cost) }),
    el("dt", { text: "Delegation" }), el("dd", { text: a.delegation.join(" → ") || "(none)" }),
    el("dt", { text: "Caveat" }), el("dd", { class: "mono", text: `${a.caveat} (hop ${a.hop})` }),
    el("dt", { text: "Waiting" }), el("dd", { class: "age", "data-created": a.created_at, text: age(a.created_at) }),
  );
  const reason = el("input", { id: reasonId, name: "reason", maxLength: 500 });
  const approve = el("button", { type: "button", text: "Approve" });
  const deny = el("button", { type: "button", class: "danger", text: "Deny" });
  approve.addEventListener("click", () => decide(a.id, "approve", reason.value));
  deny.addEventListener("click", () => decide(a.id, "deny", reason.value));
  const actions = el(
    "div",
    { class: "actions" },
    el("div", { class: "reason" }, el("label", { htmlFor: reasonId, text: "Reason (optional)" }), reason),
    approve,
    deny,
  );
  const title = `${a.tool} for ${a.holder || "a token without a holder"}`;
  return el("li", { class: "card", id: `approval-${a.id}`, "data-id": a.id }, el("h3", { text: title }), facts, actions);
}

async function decide(id, action, reason) {
  try {
    await api("POST", `approvals/${encodeURIComponent(id)}/${action}`, reason ? { reason } : {});
    say(action === "approve" ? "Approved." : "Denied.");
    const card = document.querySelector(`#approvals-list [data-id="${CSS.escape(id)}"]`);
    if (card) card.remove();
  } catch (error) {
    failed(error);
  }
}

async function pollApprovals() {
  clearTimeout(approvalsTimer);
  if (!session) return;
  try {
    const { approvals } = await api("GET", "approvals");
    const list = $("approvals-list");
    const ids = new Set(approvals.map((a) => a.id));
    // Cards stay as they are while listed, so a reason being typed is not lost to the next poll.
    for (const card of [...list.children]) if (!ids.has(card.dataset.id)) card.remove();
    const shown = new Set([...list.children].map((c) => c.dataset.id));
    for (const a of approvals) if (!shown.has(a.id)) list.append(approvalCard(a));
    for (const cell of list.querySelectorAll(".age")) cell.textContent = age(cell.dataset.created);
    $("approvals-empty").hidden = approvals.length > 0;
    $("pending-count").textContent = approvals.length ? String(approvals.length) : "";
    approvalsTimer = setTimeout(pollApprovals, APPROVALS_EVERY_MS);
  } catch (error) {
    failed(error);
    if (session) approvalsTimer = setTimeout(pollApprovals, APPROVALS_EVERY_MS * 4);
  }
}

// -- activity -----------------------------------------------------------------------------------------
function filters() {
  const params = new URLSearchParams();
  for (const field of $("activity-filters").elements) {
    if (field.name && field.value.trim()) params.set(field.name, field.value.trim());
  }
  return params;
}

function eventItem(e) {
  const outcome = e.allowed === true ? "allowed" : e.allowed === false ? "denied" : "";
  const parts = [];
  if (e.delegation) parts.push(e.delegation.join(" → "));
  if (e.tool) parts.push(`tool ${e.tool}`);
  if (e.cost) parts.push(`cost ${money(e.cost)}`);
  if (e.charged) parts.push(`charged ${money(e.charged)}`);
  if (e.code) parts.push(e.code);
  if (e.reason) parts.push(e.reason);
  if (e.token_id) parts.push(`root ${e.token_id}`);
  return el(
    "li",
    { "data-id": e.id },
    el("time", { dateTime: e.at, text: e.at.replace("T", " ").replace("Z", "") }),
    el("span", { text: e.kind }),
    el("span", { class: outcome === "allowed" ? "ok" : outcome ? "no" : "", text: outcome || "—" }),
    el("span", { class: "detail", text: parts.join(" · ") }),
  );
}

async function startActivity() {
  if (stream) stream.close();
  stream = null;
  const params = filters();
  const list = $("activity-list");
  try {
    params.set("limit", "100");
    const { events } = await api("GET", `audit?${params}`);
    list.replaceChildren(...events.map(eventItem));
    params.delete("limit");
    if (events.length) params.set("after", events[0].id);
    // Live from here: the server sends only what this session may see, and ends the stream if it ends.
    stream = new EventSource(`/console/api/audit/stream?${params}`);
    stream.onmessage = (message) => {
      list.prepend(eventItem(JSON.parse(message.data)));
      while (list.children.length > MAX_EVENTS) list.lastChild.remove();
    };
    stream.onopen = () => ($("activity-live").textContent = "Live: new events appear at the top.");
    stream.onerror = () => ($("activity-live").textContent = "Reconnecting to the live stream…");
  } catch (error) {
    failed(error);
  }
}

$("activity-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  startActivity();
});

// -- tokens -------------------------------------------------------------------------------------------
function budgetRow(b, key) {
  const id = `budget-${key}`;
  const text = `${b.spent} spent, ${b.held} held of ${b.limit} ${b.currency}`;
  return el(
    "div",
    { class: "budget" },
    el("label", { htmlFor: id, text: `${b.caveat} — ${text}` }),
    el("meter", { id, min: 0, max: b.limit_micros, value: b.used_micros, title: text }),
  );
}

function rateRow(r, key) {
  const id = `rate-${key}`;
  const text = `${r.used} of ${r.count} calls in the last ${r.window}`;
  return el(
    "div",
    { class: "budget rate" },
    el("label", { htmlFor: id, text: `${r.caveat} — ${text}` }),
    el("meter", { id, min: 0, max: r.count, value: r.used, title: text }),
  );
}

function chainNode(root, chain, children, known) {
  const parent = chain.parent && known.get(chain.parent);
  const from = parent ? parent.caveats.length : 0; // a child lists only what it adds to its parent
  const path = chain.delegation.join(" → ") || "(no delegate)";
  const header = el("header", {}, el("h4", { text: path }), el("code", { text: `chain ${chain.chain}` }));
  if (chain.revoked) header.append(el("span", { class: "badge", text: "revoked" }));
  else {
    const button = el("button", { type: "button", class: "danger", text: "Revoke", "data-key": `revoke-${chain.chain}` });
    button.setAttribute("aria-label", `Revoke ${path} (chain ${chain.chain.slice(0, 8)}) and below`);
    button.addEventListener("click", () => revoke(root, chain.chain, path));
    header.append(button);
  }
  const caveats = el("ul", { class: "caveats" });
  for (const c of chain.caveats.slice(from)) caveats.append(el("li", { class: "mono", text: `hop ${c.hop}: ${c.caveat}` }));
  const node = el("div", { class: chain.revoked ? "node revoked" : "node", "data-chain": chain.chain }, header, caveats);
  chain.budgets.filter((b) => b.index >= from).forEach((b) => node.append(budgetRow(b, `${chain.chain}-${b.index}`)));
  chain.rates.filter((r) => r.index >= from).forEach((r) => node.append(rateRow(r, `${chain.chain}-${r.index}`)));
  const item = el("li", {}, node);
  const kids = children.get(chain.chain) || [];
  if (kids.length) item.append(el("ul", {}, ...kids.map((k) => chainNode(root, k, children, known))));
  return item;
}

function rootView(root) {
  const known = new Map(root.chains.map((c) => [c.chain, c]));
  const children = new Map();
  const tops = [];
  for (const chain of root.chains) {
    if (chain.parent && known.has(chain.parent)) {
      if (!children.has(chain.parent)) children.set(chain.parent, []);
      children.get(chain.parent).push(chain);
    } else tops.push(chain);
  }
  const section = el("section", { class: "root", "aria-label": `Root ${root.token_id}` });
  section.append(el("h3", {}, "Root ", el("code", { text: root.token_id })));
  if (!tops.length) section.append(el("p", { class: "hint", text: "No chain of this root has been verified yet." }));
  else section.append(el("ul", { class: "tree" }, ...tops.map((c) => chainNode(root.token_id, c, children, known))));
  return section;
}

async function pollTokens() {
  clearTimeout(tokensTimer);
  if (!session || currentPage() !== "tokens") return;
  try {
    const data = await api("GET", "tokens");
    const text = JSON.stringify(data);
    if (text !== lastTokens) {
      lastTokens = text;
      const focused = document.activeElement && document.activeElement.dataset.key;
      $("tokens-list").replaceChildren(...data.roots.map(rootView));
      $("tokens-empty").hidden = data.roots.length > 0;
      if (focused) document.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus(); // keep keyboard place
    }
    tokensTimer = setTimeout(pollTokens, TOKENS_EVERY_MS);
  } catch (error) {
    failed(error);
  }
}

async function revoke(tokenId, chain, path) {
  if (!window.confirm(`Revoke ${path} and every token derived from it? This cannot be undone.`)) return;
  try {
    await api("POST", "revoke", { token_id: tokenId, chain });
    say(`Revoked ${path}.`);
    pollTokens();
  } catch (error) {
    failed(error);
  }
}

// -- inspect ------------------------------------------------------------------------------------------
$("inspect-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("inspect-result");
  try {
    const r = await api("POST", "inspect", { token: $("inspect-token").value.trim() });
    out.replaceChildren(...inspection(r));
  } catch (error) {
    failed(error);
  }
});

function inspection(r) {
  if (!r.valid) return [el("h3", { text: "Not a valid token" }), el("p", { class: "denial", text: r.reason })];
  const out = [el("h3", { text: `Token of root ${r.token_id}` })];
  const facts = el("dl", {});
  const fact = (name, value) => facts.append(el("dt", { text: name }), el("dd", { text: value }));
  fact("Holder", r.holder || "(none)");
  fact("Delegation", (r.delegation || []).join(" → ") || "(none)");
  fact("Tools", r.tools ? r.tools.join(", ") : "any");
  fact("Expires", r.expires_at || "never");
  fact("Revoked", r.revoked ? "yes" : "no");
  out.push(el("div", { class: "card" }, facts));
  out.push(el("h4", { text: "Hops and caveats" }));
  const hops = el("ul", { class: "hops" });
  for (const hop of r.hops) {
    const caveats = el("ul", { class: "caveats" });
    for (const c of hop.caveats) {
      caveats.append(el("li", { class: c.denies ? "mono denial" : "mono", text: c.caveat + (c.denies ? ` — denies now: ${c.denies}` : "") }));
    }
    hops.append(el("li", {}, el("span", { text: `hop ${hop.hop}: ${hop.agent || "(no delegate)"}` }), caveats));
  }
  out.push(hops);
  out.push(el("h4", { text: "Budgets" }));
  if (!r.budgets.length) out.push(el("p", { text: "No budget caveat." }));
  r.budgets.forEach((b, i) => {
    const text = `${b.spent} spent, ${b.held} held, ${b.remaining} remaining of ${b.limit} ${b.currency}`;
    const id = `inspect-budget-${i}`;
    const used = Number(b.limit) - Number(b.remaining);
    out.push(
      el("div", { class: "budget" }, el("label", { htmlFor: id, text: `${b.caveat} (hop ${b.hop}) — ${text}` }),
        el("meter", { id, min: 0, max: Number(b.limit), value: used, title: text })),
    );
  });
  out.push(el("h4", { text: "What would deny it now" }));
  if (!r.denials.length) out.push(el("p", { class: "ok", text: "Nothing: a call within its caveats would be allowed." }));
  const denials = el("ul", {});
  for (const d of r.denials) denials.append(el("li", { class: "denial", text: `${d.code}: ${d.reason}` }));
  if (r.denials.length) out.push(denials);
  return out;
}

boot();
