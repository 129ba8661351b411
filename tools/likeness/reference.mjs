// Reference face descriptors from face-api (@vladmandic/face-api on tfjs with the pure-wasm backend), for the
// parity test of the TorchSharp port (src/DreamBooth/Models/FaceRecognition/FaceRecognitionNet.cs).
//
//   npm ci                       (in this folder; versions pinned in package.json / package-lock.json)
//   node reference.mjs describe --crops ../../tests/fixtures/likeness/crops --out ../../tests/fixtures/likeness/reference-descriptors.json
//       every 150x150 PNG in --crops → its 128-d descriptor, as face-api's recognition net computes it
//   node reference.mjs photos --photos ../../data-samples/photos --crops-out DIR [--names astronaut.png,camera.png]
//       face-api's own pipeline (SSD MobileNet v1 → 68 landmarks → dlib-style aligned box → descriptor) on each photo
//       and on its mirror image; writes the aligned crops (resized to 150x150) as PNGs and prints the pairwise
//       distances as JSON (the figures quoted in docs/likeness.md)
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { PNG } from 'pngjs';

const require = createRequire(import.meta.url);
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
const tf = faceapi.tf;
const modelDir = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');

function args() {
  const [cmd, ...rest] = process.argv.slice(2);
  const opts = {};
  for (let i = 0; i < rest.length; i += 2) {
    if (!rest[i].startsWith('--') || rest[i + 1] === undefined) fail(`expected --name value pairs, got '${rest[i]}'`);
    opts[rest[i].slice(2)] = rest[i + 1];
  }
  return { cmd, opts };
}

function fail(message) {
  process.stderr.write(`reference.mjs: ${message}\n`);
  process.exit(2);
}

/** A PNG file → int32 tensor [h, w, 3] (alpha dropped; grey PNGs come back from pngjs as RGBA with r = g = b). */
function readPng(file) {
  const png = PNG.sync.read(fs.readFileSync(file));
  const rgb = new Int32Array(png.width * png.height * 3);
  for (let i = 0, o = 0; i < png.data.length; i += 4, o += 3) {
    rgb[o] = png.data[i]; rgb[o + 1] = png.data[i + 1]; rgb[o + 2] = png.data[i + 2];
  }
  return tf.tensor3d(rgb, [png.height, png.width, 3], 'int32');
}

function writePng(file, tensor) {
  const [h, w] = tensor.shape;
  const values = tensor.dataSync();
  const png = new PNG({ width: w, height: h });
  for (let i = 0, o = 0; o < values.length; i += 4, o += 3) {
    png.data[i] = values[o]; png.data[i + 1] = values[o + 1]; png.data[i + 2] = values[o + 2]; png.data[i + 3] = 255;
  }
  fs.writeFileSync(file, PNG.sync.write(png));
}

const round9 = (v) => Number(v.toPrecision(9));

async function describe(opts) {
  if (!opts.crops || !opts.out) fail('describe needs --crops DIR --out FILE');
  await faceapi.nets.faceRecognitionNet.loadFromDisk(modelDir);
  const names = fs.readdirSync(opts.crops).filter((n) => n.endsWith('.png')).sort();
  if (names.length === 0) fail(`no .png files in ${opts.crops}`);
  const descriptors = {};
  for (const name of names) {
    const image = readPng(path.join(opts.crops, name));
    if (image.shape[0] !== 150 || image.shape[1] !== 150) fail(`${name}: expected 150x150, got ${image.shape[1]}x${image.shape[0]}`);
    const d = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(image);
    descriptors[name] = Array.from(d, round9);
    image.dispose();
  }
  const out = {
    generator: 'tools/likeness/reference.mjs describe',
    faceApi: require('@vladmandic/face-api/package.json').version,
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
    model: 'face_recognition_model (face-api model/)',
    descriptors,
  };
  // one line per descriptor: readable diffs when the fixtures are regenerated
  const json = JSON.stringify({ ...out, descriptors: 'DESCRIPTORS' }, null, 1).replace('"DESCRIPTORS"',
    '{\n' + Object.entries(descriptors).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(',\n') + '\n }');
  fs.writeFileSync(opts.out, json + '\n');
  process.stdout.write(`${names.length} descriptor(s) → ${opts.out} (backend ${tf.getBackend()})\n`);
}

async function photos(opts) {
  if (!opts.photos) fail('photos needs --photos DIR');
  await faceapi.nets.ssdMobilenetv1.loadFromDisk(modelDir);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(modelDir);
  await faceapi.nets.faceRecognitionNet.loadFromDisk(modelDir);
  const names = (opts.names ?? 'astronaut.png,camera.png').split(',');
  if (opts['crops-out']) fs.mkdirSync(opts['crops-out'], { recursive: true });
  const results = {};
  for (const name of names) {
    const image = readPng(path.join(opts.photos, name));
    const variants = { [name]: image, [name.replace('.png', '-mirror.png')]: tf.reverse(image, 1) };
    for (const [key, img] of Object.entries(variants)) {
      const found = await faceapi.detectAllFaces(img).withFaceLandmarks().withFaceDescriptors();
      if (found.length === 0) { results[key] = { faces: 0 }; continue; }
      const best = found.sort((a, b) => b.detection.score - a.detection.score)[0];
      const box = best.landmarks.align(null, { useDlibAlignment: true });
      results[key] = {
        faces: found.length,
        score: round9(best.detection.score),
        alignedBox: [box.x, box.y, box.width, box.height].map(round9),
        descriptor: Array.from(best.descriptor, round9),
      };
      if (opts['crops-out']) {
        // the same crop face-api describes, then face-api's own input step (pad to square, bilinear to 150), as uint8
        const [face] = await faceapi.extractFaceTensors(img, [box]);
        const square = tf.tidy(() => {
          const t = faceapi.padToSquare(tf.expandDims(tf.cast(face, 'float32')), true);
          return tf.clipByValue(tf.round(tf.image.resizeBilinear(t, [150, 150], false, false)), 0, 255).squeeze().cast('int32');
        });
        writePng(path.join(opts['crops-out'], `faceapi-${key}`), square);
        face.dispose(); square.dispose();
      }
    }
  }
  const keys = Object.keys(results).filter((k) => results[k].descriptor);
  const distances = {};
  for (let i = 0; i < keys.length; i++)
    for (let j = i + 1; j < keys.length; j++)
      distances[`${keys[i]} | ${keys[j]}`] = round9(faceapi.euclideanDistance(results[keys[i]].descriptor, results[keys[j]].descriptor));
  process.stdout.write(JSON.stringify({ backend: tf.getBackend(), faces: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, { faces: v.faces, score: v.score, alignedBox: v.alignedBox }])), distances }, null, 1) + '\n');
}

const { cmd, opts } = args();
await tf.setBackend('wasm');
await tf.ready();
if (cmd === 'describe') await describe(opts);
else if (cmd === 'photos') await photos(opts);
else fail(`expected a command: describe | photos, got '${cmd ?? ''}'`);
