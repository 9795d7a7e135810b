// Drives one official Socket.IO client for a Rust test: JSON commands on
// stdin ({op: "connect", url, auth?, query?, headers?, transports?},
// {op: "emit", event, data?}, {op: "disconnect"}), one JSON line on stdout
// per thing the client sees ({event, data}), including connect,
// connect_error and disconnect.
'use strict';

const readline = require('node:readline');
const { io } = require('socket.io-client');

let socket = null;

function out(event, data) {
  process.stdout.write(JSON.stringify({ event, data: data === undefined ? null : data }) + '\n');
}

function connect(command) {
  if (socket) socket.disconnect();
  socket = io(command.url, {
    path: '/socket.io',
    transports: command.transports || ['websocket'],
    auth: command.auth || {},
    query: command.query || {},
    extraHeaders: command.headers || {},
    reconnection: false,
    forceNew: true,
    timeout: 10000,
  });
  socket.on('connect', () => out('connect', { transport: socket.io.engine.transport.name }));
  socket.on('connect_error', (error) => out('connect_error', { message: error.message }));
  socket.on('disconnect', (reason) => out('disconnect', { reason }));
  socket.onAny((event, ...args) => out(event, args.length > 1 ? args : args[0]));
}

readline.createInterface({ input: process.stdin })
  .on('line', (line) => {
    const command = JSON.parse(line);
    if (command.op === 'connect') connect(command);
    else if (command.op === 'emit' && 'data' in command) socket.emit(command.event, command.data);
    else if (command.op === 'emit') socket.emit(command.event);
    else if (command.op === 'disconnect') socket.disconnect();
  })
  .on('close', () => {
    if (socket) socket.disconnect();
    process.exit(0);
  });
