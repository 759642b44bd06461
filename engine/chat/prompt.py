"""How a question is put to the model, the same in every mode (memory, rag, none).

The context is always: the sink `<bos>Reference:`, then the sources (attached memories, or the same
chunks as text, or nothing), then the body built here. A base model (the default) needs a few-shot body
to answer briefly (DESIGN.md: F1 0.20 bare, 0.32 with two examples); an instruct model gets its own
chat turns instead. Which one applies is read from the GGUF: a file with a chat template is instruct.
"""

from __future__ import annotations

from dataclasses import dataclass

ABSTAIN = "unknown"  # what the model is taught to answer when the references do not say
# Chosen on XQuAD's tuning articles among four formats (m3 bench qa, README "Evaluation"): the best mean F1
# of rag and memory modes, and the only one that teaches the model to abstain.
FEW_SHOT = (
    "\n\nAnswer each question in a few words, using the references above. "
    f"If they do not say, answer {ABSTAIN}."
    "\n\nQuestion: Which city is the Louvre museum in?\nAnswer: Paris"
    "\n\nQuestion: How many legs does a spider have?\nAnswer: eight"
    f"\n\nQuestion: What was the name of the first dog on the Moon?\nAnswer: {ABSTAIN}"
)

# chat turns per family, for instruct models: (before the question, after it)
CHAT_TURNS = {
    "gemma3": ("<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n"),
    "qwen2": ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
    "qwen3": ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
    "llama": (
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
}


@dataclass(frozen=True)
class PromptFormat:
    name: str
    before: str  # text between the sources and the question
    after: str  # text between the question and the answer
    stop: tuple[str, ...]  # the answer ends at the first of these
    special: bool  # whether control tokens in before/after are parsed as such
    lead: str = ""  # what an answer starts with after `after` (a space after "Answer:")

    def body(self, question: str) -> str:
        return f"{self.before}{question.strip()}{self.after}"


BASE = PromptFormat("base", FEW_SHOT + "\n\nQuestion: ", "\nAnswer:", stop=("\n",), special=False, lead=" ")


def prompt_format(arch: str, instruct: bool) -> PromptFormat:
    """The few-shot format for base models; the family's chat turns for instruct ones."""
    if not instruct or arch not in CHAT_TURNS:
        return BASE
    user, model = CHAT_TURNS[arch]
    return PromptFormat(f"{arch}-chat", "\n\n" + user, model, stop=(), special=True)
