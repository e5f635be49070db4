// Validates the Prometheus Operator objects (ServiceMonitor, PodMonitor) in a JSON array of
// Kubernetes objects against the operator's CRD schemas; deploy/validate.sh runs it on the
// kustomize output. Other monitoring.coreos.com kinds are refused: nothing here checks them.
import { readFileSync } from "node:fs";
import { PodMonitor, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { PodMonitor, ServiceMonitor };
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failures = 0;
for (const object of objects) {
  if (!object || object.apiVersion !== "monitoring.coreos.com/v1") continue;
  const name = `${object.kind}/${object.metadata?.name}`;
  const Model = models[object.kind];
  if (!Model) {
    console.error(`${name}: no schema for this kind here`);
    failures++;
    continue;
  }
  try {
    new Model(object).validate();
  } catch (error) {
    console.error(`${name}: ${error.message}`);
    failures++;
  }
}
process.exit(failures ? 1 : 0);
