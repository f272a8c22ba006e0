// A socket.io-client session driven by tomato's tests: it connects with the token given on the
// command line, prints every event it receives as one JSON line on stdout, and emits what the
// test writes to stdin, one JSON line `{"emit": name, "data": ...}` at a time.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const [url, token] = process.argv.slice(2);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const socket = io(url, {
  auth: token === "-" ? undefined : { token },
  transports: ["websocket"],
  reconnection: false,
});
socket.on("connect", () => print({ type: "connect", id: socket.id }));
socket.on("connect_error", (err) => print({ type: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
socket.onAny((event, data) => print({ type: "event", event, data }));

createInterface({ input: process.stdin }).on("line", (line) => {
  const { emit, data } = JSON.parse(line);
  socket.emit(emit, data);
});
process.stdin.on("end", () => {
  socket.close();
  process.exit(0);
});
