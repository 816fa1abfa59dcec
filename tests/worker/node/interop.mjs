// Node BullMQ on the killsafe worker's queues, as a mixed Node/Python shop runs it.
// Usage: node interop.mjs <command> '<json args>'   (the Redis URL comes in REDIS_URL, never in argv)
//   add       {queue, prefix, jobs: [{name, data, opts}], rateLimit?: {max, duration}} -> [job ids]
//   workers   {queue, prefix}                                          -> [raw client names Node matched]
//   jobs      {queue, prefix, ids}                   -> [{id, state, processedBy, processedOn, finishedOn, failedReason}]
//   work      {queue, prefix, count, concurrency}    -> a Node worker that runs `count` jobs, then [job ids]
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const [command, raw] = process.argv.slice(2);
const args = JSON.parse(raw ?? "{}");
const connection = new IORedis(process.env.REDIS_URL, { maxRetriesPerRequest: null });
const queue = new Queue(args.queue, { connection, prefix: args.prefix });

async function run() {
  if (command === "add") {
    if (args.rateLimit) await queue.setGlobalRateLimit(args.rateLimit.max, args.rateLimit.duration);
    const added = await queue.addBulk(args.jobs);
    return added.map((job) => job.id);
  }
  if (command === "workers") {
    return (await queue.getWorkers()).map((client) => client.rawname);
  }
  if (command === "jobs") {
    return Promise.all(
      args.ids.map(async (id) => {
        const job = await queue.getJob(id);
        return {
          id,
          state: job ? await job.getState() : "missing",
          processedBy: job?.processedBy ?? null,
          processedOn: job?.processedOn ?? null,
          finishedOn: job?.finishedOn ?? null,
          failedReason: job?.failedReason ?? null,
        };
      }),
    );
  }
  if (command === "work") {
    const done = [];
    await new Promise((resolve) => {
      const worker = new Worker(
        args.queue,
        async (job) => {
          done.push(job.id);
          if (done.length === args.count) setTimeout(resolve, 50);
          return null;
        },
        { connection: connection.duplicate(), prefix: args.prefix, concurrency: args.concurrency, name: "node-worker" },
      );
      worker.on("error", (err) => console.error("worker error:", err.message));
      resolve.worker = worker;
    });
    return done;
  }
  throw new Error(`unknown command ${command}`);
}

try {
  console.log(JSON.stringify(await run()));
} finally {
  await queue.close();
  connection.disconnect();
  process.exit(0);
}
