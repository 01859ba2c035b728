// Drives `trioflow serve trioflow.examples:WORKFLOWS --llama-compat` with LlamaIndex's
// TypeScript client, as a LlamaIndex front end would (not part of CI, which installs nothing
// from npm):
//
//   trioflow serve trioflow.examples:WORKFLOWS --llama-compat --port 8000 &
//   mkdir -p /tmp/ts && cp scripts/llama_ts_client.mjs /tmp/ts && cd /tmp/ts
//   npm install @llamaindex/workflows-client && node llama_ts_client.mjs http://127.0.0.1:8000
//
// It answers the approval run's question, waits for a research run, and cancels a run.
import { createClient, getHealth, getWorkflows, postWorkflowsByNameRunNowait, getEventsByHandlerId,
  postEventsByHandlerId, getHandlersByHandlerId, getHandlers, postWorkflowsByNameRun,
  getWorkflowsByNameRepresentation, postHandlersByHandlerIdCancel } from "@llamaindex/workflows-client";
const client = createClient({ baseUrl: process.argv[2] });
console.log((await getHealth({ client })).data);
console.log((await getWorkflows({ client })).data);
const rep = (await getWorkflowsByNameRepresentation({ client, path: { name: "approval" } })).data;
console.log(rep.graph.nodes.map(n => n.id).join(","));
const h = (await postWorkflowsByNameRunNowait({ client, path: { name: "approval" }, body: { start_event: { pace: 0 } } })).data;
console.log("started", h.handler_id, h.status);
const { stream } = await getEventsByHandlerId({ client, path: { handler_id: h.handler_id }, query: { after_sequence: "-1" }, sseMaxRetryAttempts: 1 });
for await (const ev of stream) {
  console.log("event", ev.type, JSON.stringify(ev.types));
  if ((ev.types || []).includes("InputRequiredEvent")) {
    const r = await postEventsByHandlerId({ client, path: { handler_id: h.handler_id }, body: { event: { type: "Approval", value: { approved: false, comment: "no" } } } });
    console.log("sent", r.response.status, JSON.stringify(r.data));
  }
}
const done = await getHandlersByHandlerId({ client, path: { handler_id: h.handler_id } });
console.log("handler", done.response.status, done.data.status, JSON.stringify(done.data.result));
const sync = await postWorkflowsByNameRun({ client, path: { name: "research" }, body: { start_event: { topic: "ts", pace: 0 } } });
console.log("sync", sync.response.status, sync.data.status);
const list = await getHandlers({ client, query: { status: ["completed"] } });
console.log("handlers", list.data.handlers.length);
const w = (await postWorkflowsByNameRunNowait({ client, path: { name: "approval" }, body: {} })).data;
const c = await postHandlersByHandlerIdCancel({ client, path: { handler_id: w.handler_id } });
console.log("cancel", c.response.status, JSON.stringify(c.data));
