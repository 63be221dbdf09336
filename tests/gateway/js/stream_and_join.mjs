// The JS @langchain/langgraph-sdk (unmodified) against `deepagent-temporal serve`:
// a messages-tuple stream, then a stream left mid-answer and joined from its last event id.
// Prints one JSON object for the Python test to check.
import { Client } from "@langchain/langgraph-sdk";

const { GATEWAY_URL, GATEWAY_API_KEY, ASSISTANT, LONG_ASSISTANT } = process.env;
const client = new Client({ apiUrl: GATEWAY_URL, apiKey: GATEWAY_API_KEY });
const input = { messages: [{ role: "user", content: "What is 2 + 3?" }] };

function add(texts, part) {
  if (part.event === "messages") {
    const [chunk] = part.data;
    texts[chunk.id] = (texts[chunk.id] ?? "") + chunk.content;
  }
}

const thread = await client.threads.create();
const events = [];
const full = {};
for await (const part of client.runs.stream(thread.thread_id, ASSISTANT, {
  input,
  streamMode: "messages-tuple",
})) {
  events.push(part.event);
  add(full, part);
}

const other = await client.threads.create();
const abort = new AbortController();
const first = {};
let runId;
let lastEventId;
let seen = 0;
for await (const part of client.runs.stream(other.thread_id, LONG_ASSISTANT, {
  input,
  streamMode: "messages-tuple",
  signal: abort.signal,
})) {
  if (part.event === "metadata") runId = part.data.run_id;
  add(first, part);
  lastEventId = part.id;
  if (part.event === "messages" && ++seen >= 30) {
    abort.abort();
    break;
  }
}
const rest = {};
const restEvents = [];
for await (const part of client.runs.joinStream(other.thread_id, runId, {
  lastEventId,
  streamMode: "messages-tuple",
})) {
  restEvents.push(part.event);
  add(rest, part);
}

// As React's useStream submits with reconnectOnMount: a resumable run that goes on when
// the page goes away (the run id from the Content-Location header, onRunCreated), then a
// rejoin from the start ("-1", what useStream sends on mount) and one from the last id.
const page = await client.threads.create();
const leave = new AbortController();
let created;
const seenBeforeLeaving = {};
let leftAt;
let count = 0;
try {
  for await (const part of client.runs.stream(page.thread_id, LONG_ASSISTANT, {
    input,
    streamMode: ["messages-tuple", "values"],
    streamResumable: true,
    onDisconnect: "continue",
    onRunCreated: (meta) => {
      created = meta;
    },
    signal: leave.signal,
  })) {
    add(seenBeforeLeaving, part);
    leftAt = part.id;
    if (part.event === "messages" && ++count >= 20) {
      leave.abort();
      break;
    }
  }
} catch (err) {
  if (err?.name !== "AbortError") throw err;
}
const rejoined = {};
const rejoinedEvents = [];
for await (const part of client.runs.joinStream(page.thread_id, created.run_id, {
  lastEventId: "-1",
})) {
  rejoinedEvents.push(part.event);
  add(rejoined, part);
}
const resumed = {};
for await (const part of client.runs.joinStream(page.thread_id, created.run_id, {
  lastEventId: leftAt,
})) {
  add(resumed, part);
}
const run = await client.runs.get(page.thread_id, created.run_id);
const page_ = {
  created,
  seenBeforeLeaving,
  rejoined,
  rejoinedEvents,
  resumed,
  status: run.status,
};
console.log(
  JSON.stringify({ events, full, first, rest, restEvents, lastEventId, page: page_ }),
);
