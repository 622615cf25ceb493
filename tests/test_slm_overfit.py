"""End to end on the tiny config: the model overfits a few (latent, text) pairs for both TTS and ASR."""
import pytest
import torch

from holitok_slm.infer.asr import transcribe_latents
from holitok_slm.infer.tts import TTSOptions, TTSRequest, generate_latents
from holitok_slm.tiny import build_tiny_model, tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world", "green trees sway slowly"]
FRAMES = (14, 20, 9, 17)  # 3, 5, 2 and 4 whole patches


def _tts_errors(model, latents):
    """(generated patches, target patches, normalised latent MSE over the overlap, stopped by EOS) per text."""
    results = generate_latents(model, [TTSRequest(t) for t in TEXTS], TTSOptions.from_model(model),
                               torch.Generator().manual_seed(1234))  # not the seed that drew the latents
    rows = []
    for result, target in zip(results, latents):
        n = min(result.latents.shape[0], target.shape[0])
        mse = (model.normalize_latents(result.latents[:n]) - model.normalize_latents(target[:n])).pow(2).mean()
        rows.append((result.latents.shape[0] // 4, target.shape[0] // 4, mse.item(), result.stopped_by_eos))
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("audio_input", ["patch", "semantic"])  # Base and Unite input paths
def test_overfit_tts_and_asr(tmp_path, audio_input):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_tiny_model(TEXTS, tmp_path, tiny_config(audio_input))
        g = torch.Generator().manual_seed(0)
        latents = [torch.randn(n, 16, generator=g) * 2 + 0.5 for n in FRAMES]
        items = [dict(id=f"{task}{i}", task=task, text=text, latents=lat)
                 for i, (text, lat) in enumerate(zip(TEXTS, latents)) for task in ("tts", "asr")]
        model.fit_data_statistics(items)
        untrained = _tts_errors(model, latents)

        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        batch = model.collate(items)
        model.train()
        for _ in range(400):
            loss = model(**batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        assert transcribe_latents(model, latents) == TEXTS  # batched greedy, different lengths
        assert transcribe_latents(model, latents[:2], beam_size=3) == TEXTS[:2]
        trained = _tts_errors(model, latents)
        for (generated, target, mse, by_eos), (_, _, mse_untrained, _) in zip(trained, untrained):
            assert by_eos and abs(generated - target) <= 1, trained
            assert mse < 0.2 * mse_untrained, (trained, untrained)
    finally:
        torch.set_num_threads(previous)
