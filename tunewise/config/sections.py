"""The sections every run config shares, and `RunConfig`, the base of each task's config.

A run is one YAML file. Its `task` picks the task's own config class (in the task's module under
`tunewise/tasks/`), which adds the task's section (`ner:`, `image:`, ...) to the shared ones here;
`tunewise.tasks.load_config` validates a file against that class. Every field carries a
description; `tunewise init` prints them as comments, so these classes are the reference
documentation of the config. Checks of one field are pydantic validators beside it; checks across
fields are named rules (`tunewise.config.rules`, and each task's own), all reported together;
checks that need the data or the model run in `tunewise.prepare`.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tunewise.config.base import Section
from tunewise.config.identity_terms import COUNTERFACTUAL_PAIRS, IDENTITY_TERMS
from tunewise.config.rules import COMMON_RULES, Rule, enforce
from tunewise.config.tune import TUNE_RULES, TuneConfig


class DataConfig(Section):
    train: str = Field(
        description="Training data: a CSV, TSV, JSONL or Parquet file, or hf:<dataset>[:<config>] "
        "(a Hugging Face dataset by name, or a folder written by Dataset.save_to_disk)."
    )
    validation: str | None = Field(
        default=None,
        description="Validation data in any training format. When absent, a stratified "
        "validation_ratio share of train is held out (seeded by train.seed).",
    )
    test: str | None = Field(default=None, description="Optional test data, scored once after training.")
    validation_ratio: float = Field(
        default=0.1,
        gt=0.0,
        lt=0.5,
        description="Share of train held out for validation when no validation file is given.",
    )
    text_column: str = Field(default="text", description="Column holding the input text.")
    label_column: str = Field(
        default="label", description="Column holding the target (causal-lm: unused; the text is the target)."
    )
    balance: Literal["none", "reweight", "oversample"] = Field(
        default="none",
        description="Single-label classes of very different sizes: reweight (class-weighted loss, weights "
        "n / (classes x class count)) or oversample (each epoch draws rows with those weights, with "
        "replacement); none trains on the data as it is.",
    )
    dedupe: bool = Field(
        default=False,
        description="Drop from training the rows whose text also stands in validation or test, exactly or "
        "nearly (the data check's leakage). Without it, leakage is an error that stops training.",
    )
    token_cache: bool = Field(
        default=True,
        description="Keep tokenised data on disk (under $TUNEWISE_CACHE_DIR, default ~/.cache/tunewise), "
        "keyed by the texts, the tokenizer and max_length, so a second run does not tokenise again.",
    )
    max_length: int | Literal["auto"] = Field(
        default="auto",
        description="Longest input in tokens; longer inputs are truncated. auto: what the checkpoint "
        "declares (sentence-transformers max_seq_length or the tokenizer's limit), at most 512.",
    )

    @field_validator("max_length")
    @classmethod
    def _positive_length(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 8:
            raise ValueError("max_length must be at least 8 tokens, or 'auto'")
        return value


class LoraConfig(Section):
    r: int = Field(default=8, ge=1, description="LoRA rank: the size of the low-rank update.")
    alpha: float = Field(default=16, gt=0, description="LoRA scaling numerator (update is scaled by alpha / r).")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["auto"] = Field(
        default="auto",
        description="Module names to adapt (suffix match, e.g. [query, value]); auto: the attention "
        "projections of the model's architecture.",
    )


class StrategyConfig(Section):
    method: Literal["auto", "full", "freeze_backbone", "last_n_layers", "lora"] = Field(
        default="auto",
        description="How the pretrained model is adapted: full fine-tuning; freeze_backbone (train the "
        "new head only); last_n_layers (head + the top n_layers encoder layers); lora (low-rank adapters "
        "+ head, merged into the saved model). auto: lora for generative tasks (causal-lm, seq2seq); full, except "
        "for CNN image models trained on fewer than 1,000 images: freeze_backbone (measured best there; "
        "tunewise.prepare.defaults).",
    )
    n_layers: int = Field(default=2, ge=1, description="Encoder layers to train when method is last_n_layers.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings, used when method is lora.")
    layerwise_lr_decay: float = Field(
        default=1.0,
        gt=0,
        le=1.0,
        description="Each encoder layer below the top learns this factor slower than the one above "
        "(embeddings slowest); 1.0 disables the decay.",
    )
    pooling: Literal["auto", "mean", "max", "cls"] = Field(
        default="auto",
        description="How token vectors become one sentence vector for the head. auto: what the "
        "checkpoint declares (1_Pooling/config.json of sentence-transformers folders), else cls.",
    )


class EarlyStoppingConfig(Section):
    patience: int = Field(default=2, ge=1, description="Evaluations without improvement before training stops.")
    metric: str = Field(
        default="auto",
        description="Validation metric that picks the best model and drives early stopping; auto: "
        "f1_macro for classification, mse for regression, f1_micro for multi-label, f1 (entity-level, micro) for "
        "token-classification.",
    )
    min_delta: float = Field(default=0.0, ge=0, description="Smallest change that counts as an improvement.")


class TrainConfig(Section):
    epochs: float | Literal["auto"] = Field(
        default="auto",
        description="Passes over the training data; auto: 3, raised for small datasets so training "
        "takes at least ~300 optimizer steps (at most 10 epochs).",
    )
    batch_size: int | Literal["auto"] = Field(
        default="auto",
        description="Rows per batch, all processes together (before accumulation; a packed causal-LM row holds "
        "several examples): with several processes each computes its share of every batch, so a run learns the "
        "same whatever the process count. auto: 32 examples on CPU (packed rows: as many rows as hold 32 "
        "examples); on a GPU the largest of 256, 128, 64, 32 rows per GPU that keeps at least 100 steps per epoch "
        "and about 32k tokens per GPU batch (short texts leave a GPU idle at batch 32), times the processes. "
        "learning_rate auto scales with the examples per step.",
    )
    gradient_accumulation: int = Field(
        default=1, ge=1, description="Batches whose gradients are summed per optimizer step."
    )
    learning_rate: float | Literal["auto"] = Field(
        default="auto",
        description="Peak learning rate; auto: chosen from the model family and the strategy (transformers: full "
        "1e-4, last_n_layers 2e-4, lora 5e-4, freeze_backbone 2e-3; CNNs: full 5e-4, the others the same) and "
        "scaled by sqrt(effective batch / 32).",
    )
    weight_decay: float = Field(
        default=0.01, ge=0, description="AdamW decoupled weight decay (not applied to biases and norms)."
    )
    warmup_ratio: float = Field(
        default=0.06, ge=0, lt=1, description="Share of steps spent warming the learning rate up from 0."
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="Learning-rate decay after warm-up."
    )
    max_grad_norm: float | None = Field(
        default=1.0, description="Clip the gradient norm to this; null disables clipping."
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto",
        description="auto: bf16 on GPUs that support it, else fp16 on GPU; on a CPU, bf16 where it computes bfloat16 "
        "in hardware (AVX-512 BF16, AMX), else fp32. Mixed precision keeps float32 weights.",
    )
    seed: int = Field(default=0, description="Seed for the split, initialisation, dropout and data order.")
    eval_every: int | Literal["epoch"] = Field(
        default="epoch", description="Evaluate every N optimizer steps, or at each epoch's end."
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        default_factory=EarlyStoppingConfig, description="Stop when validation stops improving; null disables."
    )
    checkpoint_every: int = Field(default=500, ge=1, description="Save a resumable checkpoint every N optimizer steps.")
    keep_last: int = Field(default=2, ge=1, description="How many recent checkpoints to keep.")
    num_threads: int | None = Field(default=None, ge=1, description="CPU threads for torch; null: all cores.")
    accelerate_config: str | None = Field(
        default=None,
        description="An Accelerate config file (`accelerate config` writes one; examples/accelerate/ddp.yaml) whose "
        "settings the processes start with: `tunewise train` then starts itself under `accelerate launch "
        "--config_file` (--nproc overrides the file's process count). DDP (MULTI_GPU) runs; FSDP and DeepSpeed, "
        "which shard the training state, are refused for now (recipes and why in examples/accelerate/). null: "
        "DDP under torchrun with --nproc.",
    )
    compile: bool | Literal["auto"] = Field(
        default="auto",
        description="torch.compile each transformer block once (regional compilation) for training. auto: on "
        "one GPU when every batch has one shape (packed causal-LM rows) and the run has at least 300 "
        "optimizer steps to pay back the one-off compile; off on CPU.",
    )

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs(cls, value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, str):  # YAML reads 1e1 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError("epochs must be a positive number or 'auto'")
        return float(value)

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("batch_size must be a positive number of examples, or 'auto'")
        return value

    @field_validator("eval_every")
    @classmethod
    def _eval_every(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("eval_every must be 'epoch' or a positive step count")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _learning_rate(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0 < value < 1:
            raise ValueError("learning_rate must be between 0 and 1 (typical: 1e-5 to 1e-3), or 'auto'")
        return value


class AuditConfig(Section):
    before_training: bool = Field(
        default=True,
        description="Run the data check (tunewise check) before training, copy it into the run folder, and "
        "stop on errors. `tunewise train --skip-check` turns it off for one run.",
    )
    imbalance_warning_ratio: float = Field(
        default=10.0, gt=1, description="Warn when the largest class outnumbers the smallest by more than this."
    )
    truncation_warning_share: float = Field(
        default=0.05, ge=0, le=1, description="Warn when more than this share of rows is longer than data.max_length."
    )
    near_duplicate_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity (word shingles) above which texts are near duplicates.",
    )
    label_noise: bool = Field(
        default=True,
        description="Look for rows whose label the data disputes (confident learning on a TF-IDF baseline).",
    )
    pii_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="Extra personal-data patterns to look for: NAME: regex, e.g. EMPLOYEE_ID: 'EMP-\\d{6}'.",
    )
    pii_ner_model: str | None = Field(
        default=None,
        description="Also look for person names and places (PERSON, LOCATION) with presidio's spaCy NER, using "
        "this installed spaCy model (or saved pipeline folder), e.g. en_core_web_sm after "
        "`python -m spacy download en_core_web_sm`; tunewise never downloads it. null: patterns only (offline).",
    )


class Threshold(Section):
    warn: float = Field(ge=0, description="Above this the figure is a warning.")
    fail: float = Field(ge=0, description="Above this the figure fails the run's fairness check.")

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.warn > self.fail:
            raise ValueError("warn must not exceed fail")
        return self


DEFAULT_FAIRNESS_THRESHOLDS = {
    "demographic_parity_difference": {"warn": 0.1, "fail": 0.2},
    "equalized_odds_difference": {"warn": 0.1, "fail": 0.2},
    "counterfactual_flip_rate": {"warn": 0.02, "fail": 0.05},
    "counterfactual_probability_change": {"warn": 0.05, "fail": 0.1},
    "identity_auc_gap": {"warn": 0.05, "fail": 0.1},
}


class FairnessConfig(Section):
    enabled: bool = Field(
        default=True,
        description="Measure fairness after training, on the test split (else validation): single-label "
        "classification of one text column. Written to fairness.json and the report.",
    )
    group_column: str | None = Field(
        default=None,
        description="A sensitive attribute in the evaluation data (e.g. gender): per-group accuracy, F1, TPR, "
        "FPR and selection rate with bootstrap intervals, demographic parity and equalized odds.",
    )
    positive_label: str | None = Field(
        default=None, description="The positive class for rates and AUCs; null: the second of two classes."
    )
    identity_terms: dict[str, dict[str, list[str]]] = Field(
        default_factory=lambda: copy.deepcopy(IDENTITY_TERMS),
        description="category -> identity -> words, for subgroup, BPSN and BNSP AUCs on texts that mention "
        "each identity (no group column needed). Default: gender, religion, race/ethnicity, sexual "
        "orientation, disability and age.",
    )
    counterfactual_pairs: list[tuple[str, str]] = Field(
        default_factory=lambda: list(COUNTERFACTUAL_PAIRS),
        description="Word pairs swapped in evaluation texts (woman <-> man, ...) to measure how far the "
        "prediction moves when only the identity changes.",
    )
    augment: bool = Field(
        default=False,
        description="Mitigation: counterfactual data augmentation. Every training text holding a pair's word "
        "is added again with the word swapped, same label.",
    )
    reweight_groups: bool = Field(
        default=False,
        description="Mitigation: draw training rows with weights 1 / (rows of their group x label), so every "
        "group-label cell weighs the same. Needs group_column in the training data.",
    )
    threshold_optimizer: bool = Field(
        default=False,
        description="Mitigation: fairlearn's ThresholdOptimizer (demographic parity) fitted on validation "
        "with group_column, applied to test; reported before and after.",
    )
    thresholds: dict[str, Threshold] = Field(
        default_factory=lambda: {k: Threshold(**v) for k, v in DEFAULT_FAIRNESS_THRESHOLDS.items()},
        description="warn/fail limits per figure: " + ", ".join(DEFAULT_FAIRNESS_THRESHOLDS) + ".",
    )


class DPConfig(Section):
    epsilon: float = Field(default=8.0, gt=0, description="Privacy budget epsilon for the whole run (1-10 is usual).")
    delta: float | Literal["auto"] = Field(
        default="auto", description="Privacy delta; auto: the largest power of ten at or below 1 / (10 x rows)."
    )
    max_grad_norm: float = Field(
        default=1.0, gt=0, description="Each example's gradient is clipped to this norm before noise is added."
    )
    accountant: Literal["prv", "rdp"] = Field(
        default="prv", description="Opacus privacy accountant: prv (tightest) or rdp (Renyi DP)."
    )
    max_physical_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Split each sampled batch into pieces of at most this many rows (Opacus's "
        "BatchMemoryManager mechanism), so train.batch_size can exceed memory; null: no split.",
    )


class PrivacyConfig(Section):
    dp: DPConfig | None = Field(
        default=None,
        description="Differentially private fine-tuning (DP-SGD with Opacus): per-example clipping, Gaussian "
        "noise, Poisson-sampled batches. null: ordinary training. Text classification (all strategies) and "
        "causal-lm (LoRA; examples one per row, not packed, so each example is one unit of privacy).",
    )
    canaries: int = Field(
        default=0,
        ge=0,
        description="Generative tasks: insert this many random secrets of one fixed format ('The secret number is "
        "123 456 789.') into the training rows (never into your files), and after training measure how far the model "
        "memorised them: exposure (Carlini et al. 2019) = log2(candidates) - log2(rank among them). 0: no canaries.",
    )
    canary_repeats: int = Field(
        default=1, ge=1, description="How many times each canary is inserted (memorisation grows with repetition)."
    )
    extraction_prompts: int = Field(
        default=100,
        ge=0,
        description="Generative tasks: training answers holding personal data (found by the data check's recognizers) "
        "whose text before it is given to the model, base and fine-tuned, to see how many complete it verbatim; "
        "at most this many. 0: off.",
    )


class CardConfig(Section):
    intended_use: str | None = Field(
        default=None,
        description="Who should use the model, for what (model card: intended use). Left empty, the card says "
        "plainly that the author has not stated it.",
    )
    out_of_scope: str | None = Field(
        default=None,
        description="Uses the model is not meant for (model card: out-of-scope uses); empty: the card says so.",
    )
    authors: str | None = Field(default=None, description="Who trained the model (model card: model details).")
    license: str | None = Field(default=None, description="The model's licence (model card: model details).")


# the Captum methods tunewise.explain runs (its results.METHODS for text, IMAGE_METHODS for images; a test keeps
# them equal): spelled out here because the config sits below the explain layer
ExplainMethod = Literal[
    "auto", "integrated_gradients", "layer_integrated_gradients", "gradient_x_input", "occlusion", "grad_cam"
]


class ExplainConfig(Section):
    enabled: bool | Literal["auto"] = Field(
        default="auto",
        description="After training, explain test rows (else validation): which words (or pixels) moved each "
        "prediction, how faithful that is (a deletion test) and how much attribution identity terms carry. Written to "
        "explanations.json and the report. auto: on when the task can explain its predictions (text and sentence-pair "
        "classification, NER, question answering, image classification).",
    )
    rows: int = Field(
        default=100,
        ge=1,
        description="Evaluation rows explained, a seeded sample: about 0.12 s each for MiniLM on 2 CPU cores with "
        "occlusion (0.3 s with integrated gradients, 32 steps), so the default adds 10 to 30 seconds to a run.",
    )
    method: ExplainMethod = Field(
        default="auto",
        description="Captum attribution: integrated_gradients, layer_integrated_gradients (on the embeddings), "
        "gradient_x_input, occlusion; images: integrated_gradients or grad_cam. auto: occlusion for text (the most "
        "faithful in the deletion benchmark, bench/explain_text.py), grad_cam for images (it localises best and costs "
        "least, bench/explain_images.py).",
    )
    steps: int = Field(
        default=32,
        ge=2,
        description="Integrated gradients' steps from the baseline to the input: more steps, a smaller convergence "
        "delta (the completeness gap the report shows), proportionally more time.",
    )
    examples: int = Field(
        default=4,
        ge=0,
        description="Explained predictions the report shows as coloured text (or heat maps) of each kind: this "
        "many correct and this many wrong.",
    )


class RunConfig(Section):
    """A whole run: what to fine-tune, on which data, how, and where the results go.

    Each task's config class (in its module under `tunewise/tasks/`) derives from this one, fixes
    `task`, may narrow `data` and adds the task's own section; `rules` lists the cross-field rules
    the class obeys, all checked together after the fields are valid."""

    rules: ClassVar[tuple[Rule, ...]] = (*COMMON_RULES, *TUNE_RULES)

    task: str = Field(description="What the model learns (see tunewise.tasks for the list).")
    model: str = Field(
        default="minilm-l6",
        description="A built-in offline name (minilm-l6; causal-lm: smollm2-135m-instruct; image-classification: "
        "efficientnet-lite0), a Hugging Face hub id, or a local model folder.",
    )
    data: DataConfig = Field(description="Where the data is and which columns to use.")
    strategy: StrategyConfig = Field(default_factory=StrategyConfig, description="How the pretrained model is adapted.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation and schedule.")
    audit: AuditConfig = Field(
        default_factory=AuditConfig, description="Thresholds of the data check (tunewise check)."
    )
    fairness: FairnessConfig = Field(
        default_factory=FairnessConfig, description="Fairness measurements and mitigation (single-label text)."
    )
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig, description="Differential privacy of the training itself."
    )
    explain: ExplainConfig = Field(
        default_factory=ExplainConfig,
        description="Explanations of predictions (Captum attributions) and how faithful they are.",
    )
    card: CardConfig = Field(
        default_factory=CardConfig, description="What the model card says that only its author knows."
    )
    output_dir: str = Field(
        default="runs/latest", description="Run folder: model, metrics, history, plots, checkpoints."
    )
    tracking: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers to log to, through Accelerate's: the resolved config as parameters, the "
        "loss and learning rate every log line, each validation, the final metrics and (MLflow) the run folder's "
        "files. tensorboard writes OUTPUT_DIR/tensorboard/; mlflow logs to tracking_uri. Empty (the default): "
        "nothing is logged anywhere, and tunewise sends no telemetry.",
    )
    tracking_uri: str = Field(
        default="sqlite:///mlflow.db",
        description="Where MLflow logs (tracking: [mlflow]): a local SQLite file (the default, mlflow.db in the "
        "current folder; `mlflow ui --backend-store-uri sqlite:///mlflow.db` shows it), a folder, or a tracking "
        "server's http(s) URI.",
    )
    tune: TuneConfig | None = Field(
        default=None,
        description="What `tunewise tune` searches (tunewise train ignores it): config fields and their ranges, "
        "the metric, sampler and pruner. null: nothing to tune.",
    )

    @model_validator(mode="after")
    def _obey_rules(self) -> RunConfig:
        """Every cross-field rule of this config class, reported together (tunewise.config.rules)."""
        enforce(self, type(self).rules)
        return self
