// Generates renderings.json with @huggingface/jinja (the reference renderer of HF chat templates).
// Run once by hand: npm install @huggingface/jinja && node generate.mjs. CI never runs node.
import { Template } from "@huggingface/jinja";
import { readFileSync, writeFileSync } from "node:fs";

const templates = ["vim-tiny.jinja", "vim-tiny-sharded.jinja", "llama31-style.jinja"];
const conversations = {
  "user-only": [{ role: "user", content: "Vim is" }],
  "system-user": [{ role: "system", content: "  Answer briefly.  " }, { role: "user", content: "How do I delete a line?" }],
  "multi-turn": [
    { role: "user", content: "What is a register?" },
    { role: "assistant", content: "A place where Vim stores text." },
    { role: "user", content: "How do I yank into one?" },
  ],
  "unicode": [{ role: "user", content: "héllo wörld — 日本語 🙂\nsecond line\n" }],
};
const out = [];
for (const file of templates) {
  const template = new Template(readFileSync(new URL(file, import.meta.url), "utf8"));
  for (const [name, messages] of Object.entries(conversations)) {
    for (const addGenerationPrompt of [true, false]) {
      const rendered = template.render({
        messages, add_generation_prompt: addGenerationPrompt,
        bos_token: "<|begin_of_text|>", eos_token: "<|end_of_text|>",
      });
      out.push({ template: file, conversation: name, messages, add_generation_prompt: addGenerationPrompt, rendered });
    }
  }
}
writeFileSync(new URL("renderings.json", import.meta.url), JSON.stringify(out, null, 2) + "\n");
console.log(`${out.length} renderings written`);
