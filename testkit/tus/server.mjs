// A tus 1.0 server for Ferry's interop tests: @tus/server with its file
// store, on 127.0.0.1, uploads at /files/ stored in DIR (one data file per
// upload, named by its id, beside an .json info file).
//
//   node server.mjs DIR
//
// Prints "listening PORT" once it accepts connections (an ephemeral port).
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node server.mjs DIR');
  process.exit(2);
}

const tus = new Server({
  path: '/files',
  datastore: new FileStore({ directory: dir }),
});

const listener = tus.listen({ host: '127.0.0.1', port: 0 }, () => {
  console.log(`listening ${listener.address().port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
