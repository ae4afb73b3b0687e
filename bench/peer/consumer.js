"use strict";
/**
 * The benchmark's peer: what a team would write instead of sqs2pg, with bbc/sqs-consumer,
 * the most used Node library for SQS consumers, built the way its README shows:
 *
 *   - `PEER_CONSUMERS` (4) `Consumer.create(...)` instances on one shared `SQSClient`, each
 *     with `handleMessageBatch` and `batchSize: 10`, long-polling the queue;
 *   - each batch: `JSON.parse` and validate every body (the checks sqs2pg makes, and the
 *     column limits of the same table), HMAC-SHA256 of `ip` and `device_id` with the same
 *     key (`node:crypto`, lowercase hex, as sqs2pg), then ONE multi-row
 *     `INSERT … ON CONFLICT (message_id) DO NOTHING` through a `pg` Pool;
 *   - the handler returns the messages it stored, which sqs-consumer then deletes with
 *     `DeleteMessageBatch`; a malformed body is not returned, so it stays in the queue and
 *     the queue's redrive policy moves it to the dead-letter queue, as the README advises.
 *
 * Drain mode, like `sqs2pg run --drain`: it stops once every consumer has come back empty
 * twice in a row, and prints one JSON line. Its rate is timed as sqs2pg's "while busy" is:
 * messages handled (rows written, duplicates and malformed bodies, each counted once) over
 * the time from the first message received to the last batch that stored something and
 * had its delete done.
 *
 * Environment: SQS2PG_QUEUE_URL, DATABASE_URL (a database migrated by `sqs2pg migrate`),
 * SQS2PG_HMAC_KEY, the usual AWS_* settings (AWS_ENDPOINT_URL: see below), and
 * PEER_CONSUMERS (default 4), PEER_WAIT_TIME_SECONDS (long poll, default 1, as --drain).
 */

const crypto = require("node:crypto");
const net = require("node:net");
const { performance } = require("node:perf_hooks");
const { SQSClient } = require("@aws-sdk/client-sqs");
const { Consumer } = require("sqs-consumer");
const { Pool } = require("pg");

function setting(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") {
    console.error(`peer: set ${name}`);
    process.exit(2);
  }
  return value;
}

const queueUrl = setting("SQS2PG_QUEUE_URL");
const key = setting("SQS2PG_HMAC_KEY");
const consumerCount = Number(setting("PEER_CONSUMERS", "4"));
const waitTimeSeconds = Number(setting("PEER_WAIT_TIME_SECONDS", "1"));

// The columns of sqs2pg's user_logins, and the limits its validation enforces.
const COLUMNS = [
  "message_id", "user_id", "device_type", "hashed_ip", "hashed_device_id",
  "locale", "app_version", "create_date", "sent_at",
];
const REQUIRED = { user_id: 128, device_type: 32, ip: 45, device_id: 256, app_version: 32 };
const LOCALE_MAX = 32;

/** The row a body becomes, or null if the body is malformed. */
function toRow(message) {
  let event;
  try {
    event = JSON.parse(message.Body);
  } catch {
    return null;
  }
  if (event === null || typeof event !== "object" || Array.isArray(event)) return null;
  for (const [field, max] of Object.entries(REQUIRED)) {
    const value = event[field];
    if (typeof value !== "string" || value.length === 0 || [...value].length > max) return null;
    if (value.includes("\0")) return null;
  }
  if (net.isIP(event.ip) === 0) return null;
  const locale = event.locale ?? null;
  if (locale !== null && (typeof locale !== "string" || locale.length === 0
    || [...locale].length > LOCALE_MAX || locale.includes("\0"))) return null;
  const sentAt = new Date(Number(message.Attributes.SentTimestamp));
  return [
    message.MessageId,
    event.user_id,
    event.device_type,
    hmac(event.ip),
    hmac(event.device_id),
    locale,
    event.app_version,
    sentAt.toISOString().slice(0, 10), // the UTC date, as sqs2pg's create_date
    sentAt.toISOString(),
  ];
}

function hmac(value) {
  return crypto.createHmac("sha256", key).update(value, "utf8").digest("hex");
}

/** One statement for the whole batch: VALUES ($1, …, $9), ($10, …), … */
function insertStatement(rows) {
  const tuples = rows.map((_, r) =>
    `(${COLUMNS.map((_, c) => `$${r * COLUMNS.length + c + 1}`).join(", ")})`);
  return {
    text: `INSERT INTO user_logins (${COLUMNS.join(", ")}) VALUES ${tuples.join(", ")}`
      + " ON CONFLICT (message_id) DO NOTHING",
    values: rows.flat(),
  };
}

const pool = new Pool({
  connectionString: setting("DATABASE_URL"),
  max: consumerCount,
  application_name: "sqs-consumer-peer",
});

// sqs-consumer's SQS client. Its queue-URL middleware sends each call to the host in the
// queue URL unless `endpoint` is set on the client (the SDK's own warning says so), so the
// endpoint from the environment is given explicitly: the benchmark points it at its delay
// line, and the queue URL names LocalStack itself.
const sqs = new SQSClient(process.env.AWS_ENDPOINT_URL ? { endpoint: process.env.AWS_ENDPOINT_URL } : {});

const tally = {
  received: 0, stored: 0, inserted: 0, duplicates: 0, batches: 0, errors: 0,
  malformed: new Set(), firstReceived: null, lastDone: null,
};
const started = performance.now();
const cpuAtStart = process.cpuUsage();

async function handleMessageBatch(messages) {
  tally.firstReceived ??= performance.now();
  tally.received += messages.length;
  const stored = [];
  const rows = [];
  for (const message of messages) {
    const row = toRow(message);
    if (row === null) {
      tally.malformed.add(message.MessageId);
    } else {
      rows.push(row);
      stored.push(message);
    }
  }
  if (rows.length > 0) {
    const result = await pool.query(insertStatement(rows));
    tally.inserted += result.rowCount;
    tally.duplicates += rows.length - result.rowCount;
    tally.stored += rows.length;
  }
  tally.batches += 1;
  return stored;
}

const consumers = [];
let stopping = false;

function stopAll() {
  if (stopping) return;
  stopping = true;
  let left = consumers.length;
  for (const { consumer } of consumers) {
    consumer.once("stopped", () => {
      left -= 1;
      if (left === 0) finish();
    });
    consumer.stop();
  }
}

async function finish() {
  await pool.end();
  const cpu = process.cpuUsage(cpuAtStart);
  const busy = tally.firstReceived === null || tally.lastDone === null
    ? 0 : (tally.lastDone - tally.firstReceived) / 1e3;
  const handled = tally.stored + tally.malformed.size;
  console.log(JSON.stringify({
    consumers: consumerCount,
    received: tally.received,
    rows_stored: tally.stored,
    inserted: tally.inserted,
    duplicates: tally.duplicates,
    malformed: tally.malformed.size,
    handled,
    batches: tally.batches,
    errors: tally.errors,
    busy_s: busy,
    busy_messages_per_second: busy > 0 ? handled / busy : 0,
    elapsed_s: (performance.now() - started) / 1e3,
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
    peak_rss_kib: process.resourceUsage().maxRSS,
    node: process.version,
  }));
}

for (let index = 0; index < consumerCount; index += 1) {
  const state = { emptyInARow: 0, stored: false };
  const consumer = Consumer.create({
    queueUrl,
    sqs,
    batchSize: 10,
    waitTimeSeconds,
    messageSystemAttributeNames: ["SentTimestamp"],
    handleMessageBatch: async (messages) => {
      const stored = await handleMessageBatch(messages);
      state.stored = stored.length > 0;
      return stored;
    },
  });
  // After the handler and the deletes of its batch.
  consumer.on("response_processed", () => {
    state.emptyInARow = 0;
    if (state.stored) tally.lastDone = performance.now();
  });
  consumer.on("empty", () => {
    state.emptyInARow += 1;
    if (consumers.every(({ state: other }) => other.emptyInARow >= 2)) stopAll();
  });
  for (const event of ["error", "processing_error", "timeout_error"]) {
    consumer.on(event, (error) => {
      tally.errors += 1;
      console.error(`peer: ${event}: ${error.message}`);
    });
  }
  consumers.push({ consumer, state });
}

for (const signal of ["SIGTERM", "SIGINT"]) process.once(signal, stopAll);
for (const { consumer } of consumers) consumer.start();
