// validate.mjs FILE... - check every Kubernetes object in the given YAML
// files (multi-document streams and `kind: List` items) against the
// Kubernetes OpenAPI schemas shipped by the npm package kubernetes-models
// (types, required fields, enums, formats).  Unknown fields are NOT caught:
// the published schemas allow them, as the API server's client-side checks
// do.  Prints one line per problem and exits 1 if there was any.
import fs from "node:fs";
import { parseAllDocuments } from "yaml";

async function model(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const dir = group ? `${group}/${version}` : version;
  try {
    const mod = await import(`kubernetes-models/${dir}/${kind}`);
    return mod[kind];
  } catch (e) {
    // meta/v1 kinds the API server answers with (Status) live in the
    // apimachinery package kubernetes-models depends on
    if (group) return null;
    try {
      const mod = await import(`@kubernetes-models/apimachinery/apis/meta/${version}/${kind}`);
      return mod[kind];
    } catch (e2) {
      return null;
    }
  }
}

let problems = 0;
function fail(where, msg) {
  problems++;
  console.log(`${where}: ${msg}`);
}

async function check(obj, where) {
  if (obj === null || typeof obj !== "object") return fail(where, "not an object");
  if (obj.kind === "List" || (obj.kind || "").endsWith("List") && Array.isArray(obj.items)) {
    for (const [i, it] of (obj.items || []).entries()) await check(it, `${where}.items[${i}]`);
    return;
  }
  const M = await model(obj.apiVersion || "", obj.kind || "");
  if (!M) return fail(where, `unknown apiVersion/kind ${obj.apiVersion}/${obj.kind}`);
  try {
    new M(obj).validate();
  } catch (e) {
    fail(`${where} (${obj.kind} ${obj.metadata?.name})`, e.message.split("\n").slice(0, 6).join("; "));
  }
}

for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(fs.readFileSync(file, "utf8"));
  for (const [i, d] of docs.entries()) {
    if (d.errors.length) { fail(`${file}#${i + 1}`, d.errors[0].message); continue; }
    const obj = d.toJS();
    if (obj === null) continue;
    await check(obj, `${file}#${i + 1}`);
  }
}
console.log(`${problems} problem(s)`);
process.exit(problems ? 1 : 0);
