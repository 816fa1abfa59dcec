// Bull Board (@bull-board/api + @bull-board/express) on the killsafe queues, as a BullMQ user runs it
// next to killsafe: same Redis, same key prefix. tests/dashboard/test_bull_board.py starts it with
//   REDIS_URL=redis://... QUEUES=emails PREFIX=bull PORT=3000 node board.mjs
// It prints one line, "listening <port>", once it serves; SIGTERM stops it.
import express from 'express';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Queue } from 'bullmq';
import IORedis from 'ioredis';

const { REDIS_URL, QUEUES, PREFIX = 'bull', PORT } = process.env;
const connection = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
const queues = QUEUES.split(',').map((name) => new Queue(name, { connection, prefix: PREFIX }));

const serverAdapter = new ExpressAdapter();
serverAdapter.setBasePath('/');
createBullBoard({ queues: queues.map((queue) => new BullMQAdapter(queue)), serverAdapter });

const app = express();
app.use('/', serverAdapter.getRouter());
const server = app.listen(Number(PORT), '127.0.0.1', () => console.log(`listening ${PORT}`));

process.on('SIGTERM', async () => {
  server.close();
  await Promise.all(queues.map((queue) => queue.close()));
  await connection.quit();
  process.exit(0);
});
