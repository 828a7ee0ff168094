// Validates Kubernetes manifests offline against the Kubernetes and prometheus-operator/KEDA
// OpenAPI schemas, with the npm packages kubernetes-models, @kubernetes-models/prometheus-operator
// and @kubernetes-models/keda (installed by scripts/fetch-testdata.sh into .cache/deploy-tools).
//
//   node validate_k8s.mjs TOOLS_DIR FILE...        every document of every file must validate
//   node validate_k8s.mjs TOOLS_DIR --self-test    negative control: broken copies of a valid
//                                                  Deployment, Service and ServiceMonitor must fail
//
// Prints one line per document; exits 1 when a document is invalid, has a kind without a schema,
// or (self-test) a broken document passes.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [tools, ...args] = process.argv.slice(2);
const requireTools = createRequire(path.join(path.resolve(tools), "node_modules", "x.js"));
const yaml = requireTools("js-yaml");
// The packages are ESM with an "exports" map: import their files by path.
const resolve = (spec) => "file://" + path.join(path.resolve(tools), "node_modules", spec);

// apiVersion + kind -> the model class that validates it.
async function modelOf(doc) {
  const [group, version] = doc.apiVersion.includes("/") ? doc.apiVersion.split("/") : ["", doc.apiVersion];
  const candidates = [];
  if (group === "monitoring.coreos.com") {
    candidates.push(`@kubernetes-models/prometheus-operator/${group}/${version}/${doc.kind}`);
  } else if (group === "keda.sh") {
    candidates.push(`@kubernetes-models/keda/${group}/${version}/${doc.kind}`);
  } else {
    candidates.push(`kubernetes-models/${group === "" ? "" : group + "/"}${version}/${doc.kind}`);
  }
  for (const spec of candidates) {
    try {
      const mod = await import(resolve(spec + ".js"));
      return mod[doc.kind];
    } catch (e) {
      // try the next
    }
  }
  return null;
}

async function validate(doc) {
  if (!doc || typeof doc !== "object") return "not an object";
  if (!doc.apiVersion || !doc.kind) return "apiVersion and kind are required";
  const Model = await modelOf(doc);
  if (!Model) return `no schema for ${doc.apiVersion} ${doc.kind}`;
  try {
    new Model(doc).validate();
    return null;
  } catch (e) {
    return e.message;
  }
}

let failed = false;
if (args[0] === "--self-test") {
  const deployment = {
    apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" },
    spec: { selector: { matchLabels: { a: "b" } },
            template: { metadata: { labels: { a: "b" } },
                        spec: { containers: [{ name: "c", image: "i", ports: [{ containerPort: 80 }],
                                               startupProbe: { grpc: { port: 50051 } } }] } } },
  };
  const service = { apiVersion: "v1", kind: "Service", metadata: { name: "s" },
                    spec: { internalTrafficPolicy: "Local", ports: [{ port: 50052 }] } };
  const monitor = { apiVersion: "monitoring.coreos.com/v1", kind: "ServiceMonitor", metadata: { name: "m" },
                    spec: { selector: {}, endpoints: [{ port: "metrics", interval: "15s" }] } };
  const clone = (o) => JSON.parse(JSON.stringify(o));
  const broken = [
    ["containerPort as a string", (d) => { d.spec.template.spec.containers[0].ports[0].containerPort = "http"; }, deployment],
    ["no containers", (d) => { delete d.spec.template.spec.containers; }, deployment],
    ["no selector", (d) => { delete d.spec.selector; }, deployment],
    ["grpc probe on a named port", (d) => { d.spec.template.spec.containers[0].startupProbe.grpc.port = "grpc"; }, deployment],
    ["replicas as a string", (d) => { d.spec.replicas = "3"; }, deployment],
    ["internalTrafficPolicy Nearby", (d) => { d.spec.internalTrafficPolicy = "Nearby"; }, service],
    ["ServiceMonitor endpoints not a list", (d) => { d.spec.endpoints = { port: "metrics" }; }, monitor],
  ];
  for (const good of [deployment, service, monitor]) {
    const error = await validate(good);
    if (error) { failed = true; console.log(`FAIL control ${good.kind} should be valid: ${error}`); }
  }
  for (const [name, mutate, base] of broken) {
    const doc = clone(base);
    mutate(doc);
    const error = await validate(doc);
    if (error && !error.startsWith("no schema")) {
      console.log(`ok   rejected ${name}: ${error.split("\n")[0]}`);
    } else {
      failed = true;
      console.log(`FAIL ${error ? "could not check" : "accepted"} a broken ${base.kind}: ${name}`);
    }
  }
} else {
  for (const file of args) {
    const docs = yaml.loadAll(readFileSync(file, "utf8")).filter((d) => d);
    for (const doc of docs) {
      const error = await validate(doc);
      const name = `${file}: ${doc.kind} ${doc.metadata?.name}`;
      if (error) { failed = true; console.log(`FAIL ${name}: ${error}`); }
      else console.log(`ok   ${name}`);
    }
  }
}
process.exit(failed ? 1 : 0);
