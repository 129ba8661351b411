using System.Collections;
using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using DreamBooth.Training;

namespace DreamBooth.Interactive;

/// <summary>
/// The notebook view of a <see cref="TrainingConfig"/>: every setting by its JSON key, grouped as the recipe
/// explains them, with the recipe's default beside any value that differs, and the validation problems
/// shown inline (at the top, and in red on the row of the setting they name).
/// </summary>
public static class TrainingConfigView
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() =>
    {
        Formatters.Html<TrainingConfig>(c => ToHtml(c));
        Formatters.Html<A1111ImportResult>(ImportToHtml);
    });

    /// <summary>Sections in the order the recipe explains them; a setting not listed lands in "other".</summary>
    public static readonly IReadOnlyList<(string Section, string[] Keys)> Sections =
    [
        ("model and output", ["pretrained_model", "output_dir", "name", "device"]),
        ("intervals", ["epochs", "save_every_epochs", "keep_last_saves", "keep_training_states", "save_dtype", "save_ema_weights", "save_diffusers_at_end", "preview_every_epochs", "preview_prompts", "preview_seed", "preview_ema", "preview_likeness"]),
        ("batch", ["batch_size", "gradient_accumulation_steps", "prior_stepping", "class_batch_size"]),
        ("learning rate", ["learning_rate", "text_encoder_learning_rate", "lr_scheduler", "lr_warmup_steps", "lr_num_cycles", "lr_power", "lr_end"]),
        ("optimizer", ["optimizer", "weight_decay", "text_encoder_weight_decay", "max_grad_norm", "text_encoder_max_grad_norm"]),
        ("precision, EMA, memory", ["mixed_precision", "use_ema", "ema_decay", "ema_warmup", "ema_device", "cache_latents", "gradient_checkpointing"]),
        ("what trains", ["train_unet", "text_encoder_step_ratio", "freeze_clip_normalization", "offset_noise", "clip_skip"]),
        ("tokens", ["pad_tokens", "strict_tokens", "shuffle_tags", "max_token_length"]),
        ("prior loss", ["prior_loss_weight", "scale_prior_loss", "prior_loss_weight_min", "prior_loss_target_epochs"]),
        ("images", ["hflip", "dynamic_image_normalization", "max_resolution", "seed"]),
    ];

    /// <summary>Every setting (not the concepts) as (key, value) in JSON spelling.</summary>
    public static IReadOnlyList<(string Key, string Value)> Settings(TrainingConfig config) => Values(config, typeof(TrainingConfig));

    static List<(string Key, string Value)> Values(object o, Type t) =>
        t.GetProperties(BindingFlags.Public | BindingFlags.Instance)
         .Where(p => p.CanWrite && p.GetIndexParameters().Length == 0 && p.PropertyType != typeof(List<ConceptConfig>))
         .Select(p => (JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name), Show(p.GetValue(o))))
         .ToList();

    static string Show(object? v) => v switch
    {
        null => "",
        string s => s.Length == 0 ? "\"\"" : s,
        bool b => b ? "true" : "false",
        double d => d.ToString("G", CultureInfo.InvariantCulture),
        IEnumerable e => "[" + string.Join(", ", e.Cast<object?>().Select(x => Show(x))) + "]",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    public static string ToHtml(TrainingConfig config, bool checkFolders = true)
    {
        var problems = config.Validate(checkFolders);
        var defaults = Values(new TrainingConfig(), typeof(TrainingConfig)).ToDictionary(kv => kv.Key, kv => kv.Value);
        var values = Values(config, typeof(TrainingConfig)).ToDictionary(kv => kv.Key, kv => kv.Value);
        var sb = new StringBuilder("<div class=\"dreambooth-config\">");
        sb.Append(problems.Count == 0
            ? "<div style=\"color:#1a7f37;font-weight:bold\">✔ valid: no problems found</div>"
            : $"<div style=\"color:#c62828;font-weight:bold\">✖ {problems.Count} problem(s):</div><ul style=\"color:#c62828\">" +
              string.Concat(problems.Select(p => "<li>" + Html.Encode(p) + "</li>")) + "</ul>");
        sb.Append("<table><thead><tr><th style=\"text-align:left\">setting</th><th style=\"text-align:left\">value</th><th style=\"text-align:left\">recipe default</th><th style=\"text-align:left\">problem</th></tr></thead><tbody>");
        var listed = new HashSet<string>();
        var sections = Sections.ToList();
        var other = values.Keys.Where(k => !Sections.Any(s => s.Keys.Contains(k))).ToArray();
        if (other.Length > 0) sections.Add(("other", other));
        foreach (var (section, keys) in sections)
        {
            sb.Append("<tr><td colspan=\"4\" style=\"text-align:left;font-weight:bold;background:rgba(127,127,127,0.15)\">").Append(Html.Encode(section)).Append("</td></tr>");
            foreach (var key in keys)
            {
                if (!values.TryGetValue(key, out var value)) continue;
                listed.Add(key);
                Row(sb, key, value, defaults.GetValueOrDefault(key), problems.Where(p => Names(p, key)).ToList());
            }
        }
        for (int i = 0; i < config.Concepts.Count; i++)
        {
            sb.Append("<tr><td colspan=\"4\" style=\"text-align:left;font-weight:bold;background:rgba(127,127,127,0.15)\">").Append($"concepts[{i}]").Append("</td></tr>");
            var cdefaults = Values(new ConceptConfig(), typeof(ConceptConfig)).ToDictionary(kv => kv.Key, kv => kv.Value);
            foreach (var (k, v) in Values(config.Concepts[i], typeof(ConceptConfig)))
            {
                string key = $"concepts[{i}].{k}";
                Row(sb, key, v, cdefaults.GetValueOrDefault(k), problems.Where(p => Names(p, key)).ToList());
            }
        }
        if (config.Concepts.Count == 0)
            Row(sb, "concepts", "[]", "[]", problems.Where(p => Names(p, "concepts")).ToList());
        return sb.Append("</tbody></table></div>").ToString();
    }

    /// <summary>Validation messages start with the key they are about ("learning_rate = ...", "concepts[0].instance_dir ...").</summary>
    static bool Names(string problem, string key) =>
        problem.StartsWith(key, StringComparison.Ordinal) && (problem.Length == key.Length || problem[key.Length] is ' ' or '.' or ',');

    static void Row(StringBuilder sb, string key, string value, string? recipe, List<string> problems)
    {
        bool changed = recipe is not null && recipe != value;
        string style = problems.Count > 0 ? " style=\"color:#c62828\"" : "";
        sb.Append("<tr").Append(style).Append("><td style=\"text-align:left\"><code>").Append(Html.Encode(key)).Append("</code></td>")
          .Append("<td style=\"text-align:left\">").Append(changed ? "<b>" : "").Append(Html.Encode(value)).Append(changed ? "</b>" : "").Append("</td>")
          .Append("<td style=\"text-align:left\">").Append(changed ? Html.Encode(recipe) : "").Append("</td>")
          .Append("<td style=\"text-align:left\">").Append(Html.Encode(string.Join("; ", problems))).Append("</td></tr>");
    }

    public static string ImportToHtml(A1111ImportResult r)
    {
        var sb = new StringBuilder("<div class=\"dreambooth-a1111-import\">");
        sb.Append($"<h4>Imported from db_config.json: {r.Mapped.Count} mapped, {r.Ignored.Count} ignored</h4>");
        sb.Append("<table><thead><tr><th style=\"text-align:left\">mapped (theirs → ours = value)</th><th style=\"text-align:left\">ignored (why)</th></tr></thead><tbody>");
        for (int i = 0; i < Math.Max(r.Mapped.Count, r.Ignored.Count); i++)
            sb.Append("<tr><td style=\"text-align:left\">").Append(i < r.Mapped.Count ? Html.Encode(r.Mapped[i]) : "")
              .Append("</td><td style=\"text-align:left\">").Append(i < r.Ignored.Count ? Html.Encode(r.Ignored[i]) : "").Append("</td></tr>");
        sb.Append("</tbody></table><h4>The resulting config</h4>");
        sb.Append(ToHtml(r.Config, checkFolders: false));
        return sb.Append("</div>").ToString();
    }
}
