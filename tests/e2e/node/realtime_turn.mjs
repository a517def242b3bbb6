// One text turn with the openai Node SDK's realtime client (OpenAIRealtimeWS), on the path
// given: "ga" (OpenAI client, /openai/v1/realtime) or "preview" (AzureOpenAI client,
// /openai/realtime?api-version=…&deployment=…). Prints the server event types, one per line.
import { OpenAI, AzureOpenAI } from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const [flavour, base, key, deployment] = process.argv.slice(2);
const seen = [];
let rt;
if (flavour === "ga") {
  const client = new OpenAI({ baseURL: `${base}/openai/v1`, apiKey: key });
  rt = new OpenAIRealtimeWS({ model: deployment }, client);
} else {
  const client = new AzureOpenAI({ endpoint: base, apiKey: key, apiVersion: "2025-04-01-preview", deployment });
  rt = await OpenAIRealtimeWS.azure(client);
}
const finished = new Promise((resolve, reject) => {
  rt.on("error", (err) => reject(err));
  rt.on("event", (event) => {
    seen.push(event.type);
    if (event.type === "session.created") {
      const session = flavour === "ga" ? { type: "realtime", output_modalities: ["text"] } : { modalities: ["text"] };
      rt.send({ type: "session.update", session });
      rt.send({
        type: "conversation.item.create",
        item: { type: "message", role: "user", content: [{ type: "input_text", text: "Hello!" }] },
      });
      rt.send({ type: "response.create" });
    }
    if (event.type === "response.done") resolve(event);
  });
});
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000);
const done = await finished;
clearTimeout(timeout);
rt.close();
console.log(seen.join("\n"));
console.log(`status=${done.response.status}`);
