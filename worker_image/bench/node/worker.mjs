// Node BullMQ no-op worker: the baseline the killsafe worker is compared with.
// Usage: node worker.mjs <redis-url> <queue> <concurrency>
// Prints "ready" once connected; SIGTERM closes the worker (finishing in-flight jobs) and exits 0.
import { Worker } from "bullmq";

const [url, queue, concurrency] = process.argv.slice(2);
if (!url || !queue || !concurrency) {
  console.error("usage: node worker.mjs <redis-url> <queue> <concurrency>");
  process.exit(2);
}
const { hostname, port } = new URL(url);
const worker = new Worker(queue, async () => null, {
  connection: { host: hostname, port: Number(port), maxRetriesPerRequest: null },
  concurrency: Number(concurrency),
});
worker.on("error", (err) => console.error("worker error:", err));
process.on("SIGTERM", async () => {
  await worker.close();
  process.exit(0);
});
await worker.waitUntilReady();
console.log("ready");
