// Validates the custom resources in a JSON array of Kubernetes objects against their CRD
// schemas: Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule, KEDA's ScaledJob;
// deploy/validate.sh runs it on each component file and on the kustomize output. Other kinds
// of these API groups are refused: nothing here checks them.
import { readFileSync } from "node:fs";
import { PodMonitor, PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { ScaledJob } from "@kubernetes-models/keda/keda.sh/v1alpha1";

const models = {
  "monitoring.coreos.com/v1": { PodMonitor, PrometheusRule, ServiceMonitor },
  "keda.sh/v1alpha1": { ScaledJob },
};
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failures = 0;
for (const object of objects) {
  const group = object && models[object.apiVersion];
  if (!group) continue;
  const name = `${object.kind}/${object.metadata?.name}`;
  const Model = group[object.kind];
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
